"""The pipeline recipe: one validated YAML file (unknown keys and wrong types are errors)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graphs.errors import InputError

# `--mode auto`'s short fine-tune of each candidate before ranking (toolchain/refine_modes.py): 100 batches of 64
# images (6,400), the images bench/results/accuracy_at_latency_resnet20_ft10_auto_tuned.md ran
AUTO_TUNE_BATCHES = 100


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainStage(Strict):
    epochs: int = Field(5, ge=1)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(5e-4, ge=0)


class ProfileStage(Strict):
    backend: str = "ort"  # where the budget is measured: ort, tensorrt, torch (as `compress prune --backend`)
    provider: Optional[str] = None  # ort: cpu | cuda | tensorrt; torch: cpu | cuda (None: the backend's default)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    batch: int = Field(1, ge=1)  # the batch size the budget is about
    round_to: Optional[int] = Field(None, ge=1)  # None: the backend's channel block
    points: int = Field(3, ge=1)
    runs: int = Field(20, ge=1)


class PruneStage(Strict):
    budget: float = Field(..., gt=0, le=1)
    mode: Literal["filter", "layer", "joint", "auto"] = "joint"  # auto: each, the best on held-out data kept
    criterion: str = "sp-lamp"
    layer_criterion: Optional[str] = None
    solver: Literal["group-knapsack", "halp"] = "group-knapsack"
    stages: int = Field(1, ge=1)
    max_prune_ratio: float = Field(1.0, gt=0, le=1)  # no group loses more than this fraction of its width
    max_prune_ratio_for: dict[str, float] = {}  # group id glob or stride<=N -> its own max_prune_ratio (0: whole)
    confirm: int = Field(1, ge=0)  # fresh measurements of the kept plan (prune --confirm)
    bn_batches: int = Field(16, ge=0)  # batches of the data that re-estimate BatchNorm statistics (prune --bn-batches)
    auto_tune_batches: int = Field(AUTO_TUNE_BATCHES, ge=0)  # mode auto: rank after a short fine-tune (prune --auto-tune-batches)
    scores: list[str] = ["mean:l2", "mean:bn-gamma", "imprinting"]  # layer criteria shown in the report


class FinetuneStage(Strict):
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(5e-4, ge=0)
    distill: bool = False


class BuildStage(Strict):
    backend: Literal["ort", "tensorrt"] = "ort"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    max_drop: Optional[float] = None


class Recipe(Strict):
    name: str = "run"
    model: str
    input_shape: Optional[list[int]] = None
    data: str
    # How the data's images are normalised in every stage (train, criteria, fine-tuning, calibration):
    # auto, none, dataset, imagenet, inception, cifar10, cifar100 (see `compress train --help`).
    normalize: str = "auto"
    out: str
    seed: int = 0
    checkpoint: Optional[str] = None  # weights to start from; else `train` makes a baseline
    train: Optional[TrainStage] = None
    profile: ProfileStage = ProfileStage()
    prune: PruneStage
    finetune: Optional[FinetuneStage] = FinetuneStage()
    build: Optional[BuildStage] = None
    report: bool = True


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a mapping of keys (model, data, out, prune, ...)")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: {key}: {first['msg'].lower()}") from None
    if recipe.checkpoint is not None and recipe.train is not None:
        raise InputError(f"{path}: give either checkpoint (start from weights) or train (make a baseline), not both")
    from toolchain.data_transforms import NORMALIZE_CHOICES  # torchvision: only once a recipe is read

    if recipe.normalize not in NORMALIZE_CHOICES:
        raise InputError(f"{path}: normalize: unknown {recipe.normalize!r}; expected one of {', '.join(NORMALIZE_CHOICES)}")
    if recipe.input_shape is not None and (len(recipe.input_shape) != 4 or min(recipe.input_shape) < 1):
        raise InputError(f"{path}: input_shape: must be four positive integers N, C, H, W")
    return recipe
