"""Apply surgery's edits to a torch module, so it computes what the pruned ONNX graph computes.

The join key is the parameter name: every sliced initializer is the torch parameter or buffer
of the same name. Module attributes that describe widths (Conv in/out_channels, BatchNorm
num_features, ultralytics' C2f.c, ...) are restored from the new tensor shapes by the per-type
rules in toolchain.widths, so the module stays a normal, trainable nn.Module.
"""
from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from graphs.errors import InputError
from graphs.surgery import Edits
from toolchain.widths import fix_all_widths

__all__ = ["apply_edits", "replace_tensor"]
# ONNX-only constants: the exporter's '/layer1/Constant_output_0', 'onnx::Reshape_12', and surgery's
# '{node}_input{i}_pruned'. Anchored at the end: a torch parameter 'x_output_proj.weight' is a torch name.
_ONNX_ONLY = re.compile(r"^(/|onnx::)|_output_\d+$|_input\d+_pruned$")


def apply_edits(module: nn.Module, edits: Edits) -> nn.Module:
    """Slice, re-initialise and remove in place; returns `module` for chaining."""
    tensors = dict(module.named_parameters(remove_duplicate=False)) | dict(module.named_buffers(remove_duplicate=False))
    missing = [name for name in list(edits.slices) + list(edits.reinit) if name not in tensors and _is_torch_name(name)]
    if missing:
        raise InputError(f"the model has no parameter {missing[0]} that the pruned graph changes: is it the exported model?")
    with torch.no_grad():
        for name, cuts in edits.slices.items():
            if name not in tensors:
                continue  # an ONNX-only constant (e.g. a reshape target), computed at run time in torch
            value = tensors[name]
            for axis, kept in cuts:
                value = value.index_select(axis, torch.as_tensor(np.asarray(kept), dtype=torch.long))
            replace_tensor(module, name, value)
        for name, values in edits.reinit.items():
            replace_tensor(module, name, torch.as_tensor(np.asarray(values)))
    for weight_name, groups in edits.conv_groups.items():
        module.get_submodule(weight_name.rpartition(".")[0]).groups = groups
    fix_all_widths(module)
    for name in edits.removed:
        module.set_submodule(name, nn.Identity())
    return module


def _is_torch_name(name: str) -> bool:
    return _ONNX_ONLY.search(name) is None


def replace_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if attr in owner._parameters:
        old = owner._parameters[attr]
        owner._parameters[attr] = nn.Parameter(value.to(old.dtype).contiguous(), requires_grad=old.requires_grad)
    else:
        old = owner._buffers[attr]
        owner._buffers[attr] = value.to(old.dtype).contiguous()
