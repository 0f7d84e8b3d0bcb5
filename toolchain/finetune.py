"""`compress finetune DIR`: recover accuracy of a pruned model in torch, then put the trained
weights back into DIR/model.onnx by name (the same graph, new values) and check parity.

Two ways to a trainable module: the torch model the plan names (`compress export` specs), or, for a
directory pruned from an ONNX file with no torch source, onnx2torch's module built from DIR/model.onnx
(toolchain.onnx_torch). With `distill_only` there are no labels: the loss is the distance to the
unpruned model's outputs, flattened leaf by leaf, and that distance on the val split is the score.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import save_file

from graphs.atomic import atomic_dir
from graphs.errors import InputError
from graphs.onnx_io import load_model, require_input_shape, save_model
from graphs.plan import load_plan
from toolchain.data import make_loader
from toolchain.distill import teacher_distance
from toolchain.onnx_only import is_onnx_only
from toolchain.pruned_dir import load_pruned_module
from toolchain.train import TrainConfig, device_for, evaluate, train, write_history
from toolchain.verify import verify_module

FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


class ParityLost(Exception):
    """The fine-tuned ONNX no longer matches the torch module (a bug, reported as exit 1)."""


@dataclass
class Trainable:
    """A pruned directory's module, how to get its teacher, and how to put its values into the ONNX
    (returns the new model and the tensors for weights.safetensors)."""
    module: torch.nn.Module
    teacher: Callable[[], torch.nn.Module]
    write_back: Callable[[onnx.ModelProto, tuple], tuple[onnx.ModelProto, dict[str, torch.Tensor]]]


def source_onnx(directory: Path, why: str) -> onnx.ModelProto:
    source = json.loads((directory / "summary.json").read_text()).get("source_onnx")
    if not source or not Path(source).is_file():
        raise InputError(f"{why} needs the unpruned model, {source or 'unrecorded'}, which is not there")
    return load_model(source)


def teacher_for(directory: Path) -> torch.nn.Module:
    from toolchain.torch_source import torch_module_for

    return torch_module_for(source_onnx(directory, "distillation"))[0].eval()


def _torch_trainable(directory: Path) -> Trainable:
    module = load_pruned_module(directory)

    def write_back(model, shape):
        return _with_weights(model, module, shape), _state(module)

    return Trainable(module, lambda: teacher_for(directory), write_back)


def _onnx_trainable(directory: Path, model: onnx.ModelProto, shape) -> Trainable:
    from toolchain.onnx_torch import module_from_onnx, onnx_parity, onnx_with_values

    converted = module_from_onnx(model)
    check = onnx_parity(converted.module, model, shape)
    if not check.ok:
        raise ParityLost(f"onnx2torch's module differs from {directory}/model.onnx under onnxruntime before "
                         f"training (max abs diff {check.max_diff:.3g} > {check.tolerance:.3g}): not fine-tuned")

    def write_back(onnx_model, shape):
        new = onnx_with_values(onnx_model, converted)
        after = onnx_parity(converted.module.cpu(), new, shape)
        if not after.ok:
            raise ParityLost(f"fine-tuned weights break parity: max abs diff {after.max_diff:.3g}")
        state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in new.graph.initializer
                 if i.data_type in FLOATS}
        return new, state

    def teacher():
        return module_from_onnx(source_onnx(directory, "distillation")).module.eval()

    return Trainable(converted.module, teacher, write_back)


def finetune_dir(directory: str | Path, data: str, config: TrainConfig, distill: bool = False,
                 progress=None, on_epoch=None, distill_only: bool = False, normalize: str = "auto") -> dict:
    directory = Path(directory)
    onnx_only = is_onnx_only(directory)
    model = load_model(directory / "model.onnx")  # a broken model.onnx is refused before an epoch is spent
    plan = load_plan(directory / "plan.json")
    shape = tuple(plan.model.get("input_shape") or require_input_shape(model, str(directory / "model.onnx")))
    part = _onnx_trainable(directory, model, shape) if onnx_only else _torch_trainable(directory)
    module = part.module
    loaders = {split: make_loader(data, shape, split, config.batch_size if split == "train" else 256, seed=config.seed,
                                  augment=split == "train", shuffle=split == "train", unlabeled=distill_only,
                                  normalize=normalize)
               for split in ("train", "val")}
    teacher = part.teacher() if distill or distill_only else None
    config.distill, config.distill_only = distill, distill_only
    score = _scorer(teacher, loaders["val"]) if distill_only else None
    before = score(module) if score else evaluate(module, loaders["val"])
    history = train(module, loaders["train"], loaders["val"], config, checkpoint_dir=directory / "finetune",
                    teacher=teacher, progress=progress, on_epoch=on_epoch, score=score)
    module = module.cpu().eval()
    after = score(module) if score else evaluate(module, loaders["val"], torch.device("cpu"))
    teacher_metrics = evaluate(teacher, loaders["val"], torch.device("cpu")) if teacher is not None and not score else None
    result = {"data": data, "before": before, "after": after, "teacher": teacher_metrics}
    model, state = part.write_back(load_model(directory / "model.onnx"), shape)
    # One directory swap: model.onnx, its weights and train.json never disagree, even after a kill.
    with atomic_dir(directory, start_from=directory) as tmp:
        save_file(state, str(tmp / "weights.safetensors"), metadata={"finetuned": "1"})
        save_model(model, tmp / "model.onnx")
        write_history(tmp / "train.json", config, history, result)
    return {**result, "history": history}


def save_module_weights(directory: str | Path, module: torch.nn.Module) -> None:
    """Put a trained module's values into a torch-sourced pruned DIR (model.onnx and weights.safetensors, by
    name, parity checked), in one directory swap; for training done outside `finetune_dir`, such as a
    benchmark's own schedule between pruning stages."""
    directory = Path(directory)
    plan = load_plan(directory / "plan.json")
    model = load_model(directory / "model.onnx")
    shape = tuple(plan.model.get("input_shape") or require_input_shape(model, str(directory / "model.onnx")))
    model = _with_weights(model, module.cpu().eval(), shape)
    with atomic_dir(directory, start_from=directory) as tmp:
        save_file(_state(module), str(tmp / "weights.safetensors"), metadata={"finetuned": "1"})
        save_model(model, tmp / "model.onnx")


def _scorer(teacher: torch.nn.Module, val_loader) -> Callable[[torch.nn.Module], dict]:
    """Without labels, a model's score is its distance to the teacher on the val split (lower is better)."""
    def score(module: torch.nn.Module) -> dict:
        return {"distance": teacher_distance(module, teacher, val_loader, device_for())}
    return score


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def _with_weights(model: onnx.ModelProto, module: torch.nn.Module, shape) -> onnx.ModelProto:
    """The same graph with the module's trained values, by name; refused if parity is lost."""
    state = _state(module)
    for init in model.graph.initializer:
        if init.name in state and tuple(init.dims) == tuple(state[init.name].shape):
            init.CopyFrom(onnx.numpy_helper.from_array(state[init.name].numpy(), init.name))
    result = verify_module(module, model, shape)
    if not result.parity.ok:
        raise ParityLost(f"fine-tuned weights break parity: max abs diff {result.parity.max_diff:.3g}")
    return model


def finetune_between_stages(data: str, epochs: int = 1, log: Callable[[str], None] = lambda m: None,
                            normalize: str = "auto"):
    """A between-stages hook: fine-tune the stage's pruned model briefly (toolchain/train.py) so the
    next stage scores and prunes a model that has recovered, as SP-LAMP's multi-stage schedule does."""
    def hook(stage: int, stage_dir: Path) -> None:
        result = finetune_dir(stage_dir, data, TrainConfig(epochs=epochs), normalize=normalize)
        log(f"  stage {stage}: fine-tuned {epochs} epoch(s) on {data}: top-1 "
            f"{result['before']['top1']:.2f} -> {result['after']['top1']:.2f}")
    return hook
