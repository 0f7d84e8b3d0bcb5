"""Output distillation from the unpruned model: the teacher's mode while the student trains, and the
distance to the teacher that stands in for accuracy when there are no labels.

A model's output structure can depend on its mode (ultralytics' Detect returns the raw per-level maps
in train mode and decoded boxes plus those maps in eval mode; torchvision's Inception adds aux logits),
so the teacher runs in train mode too, with its BatchNorm and Dropout in eval mode: it then computes its
inference function in the student's output structure.
"""
from __future__ import annotations

import torch
from torch import nn

from toolchain.outputs import distill_loss

__all__ = ["teacher_mode", "teacher_distance"]

_FROZEN = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def teacher_mode(teacher: nn.Module) -> nn.Module:
    """`teacher` in train mode (the student's output structure) with inference-time BatchNorm and Dropout."""
    teacher.train()
    for module in teacher.modules():
        if isinstance(module, _FROZEN):
            module.eval()
    return teacher.requires_grad_(False)


def teacher_distance(module: nn.Module, teacher: nn.Module, loader, device: torch.device) -> float:
    """Mean distillation loss (variance-scaled squared error per output leaf) over `loader`, both models
    in eval mode: how far the deployed student is from the deployed teacher."""
    module.eval().to(device)
    teacher.eval().to(device)
    total, seen = 0.0, 0
    with torch.no_grad():
        for x, _ in loader:
            x = x.to(device)
            total += float(distill_loss(module(x), teacher(x))) * len(x)
            seen += len(x)
    return total / max(1, seen)
