"""Apply surgery's edits to a torch module, so it computes what the pruned ONNX graph computes.

The join key is the parameter name: every sliced initializer is the torch parameter or buffer
of the same name. Module attributes that describe widths (Conv in/out_channels, BatchNorm
num_features, Linear in/out_features, LayerNorm normalized_shape) are restored from the new
tensor shapes, so the module stays a normal, trainable nn.Module.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from graphs.errors import InputError
from graphs.surgery import Edits


def apply_edits(module: nn.Module, edits: Edits) -> nn.Module:
    """Slice, re-initialise and remove in place; returns `module` for chaining."""
    tensors = dict(module.named_parameters(remove_duplicate=False)) | dict(module.named_buffers(remove_duplicate=False))
    missing = [name for name in list(edits.slices) + list(edits.reinit) if name not in tensors and _is_torch_name(name)]
    if missing:
        raise InputError(f"the model has no parameter {missing[0]} that the pruned graph changes: is it the exported model?")
    touched: set[str] = set()
    with torch.no_grad():
        for name, cuts in edits.slices.items():
            if name not in tensors:
                continue  # an ONNX-only constant (e.g. a reshape target), computed at run time in torch
            value = tensors[name]
            for axis, kept in cuts:
                value = value.index_select(axis, torch.as_tensor(np.asarray(kept), dtype=torch.long))
            _replace_tensor(module, name, value)
            touched.add(name.rpartition(".")[0])
        for name, values in edits.reinit.items():
            _replace_tensor(module, name, torch.as_tensor(np.asarray(values)))
            touched.add(name.rpartition(".")[0])
    for weight_name, groups in edits.conv_groups.items():
        module.get_submodule(weight_name.rpartition(".")[0]).groups = groups
    for owner in touched:
        _fix_widths(module.get_submodule(owner) if owner else module)
    for name in edits.removed:
        module.set_submodule(name, nn.Identity())
    return module


def _is_torch_name(name: str) -> bool:
    # ONNX-only constants are named by node paths ('/layer1/Constant_output_0') or 'onnx::...'.
    return not name.startswith(("/", "onnx::")) and "_output_" not in name and "_pruned" not in name


def _replace_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if attr in owner._parameters:
        old = owner._parameters[attr]
        owner._parameters[attr] = nn.Parameter(value.to(old.dtype).contiguous(), requires_grad=old.requires_grad)
    else:
        old = owner._buffers[attr]
        owner._buffers[attr] = value.to(old.dtype).contiguous()


def _fix_widths(owner: nn.Module) -> None:
    """Make width attributes agree with the (sliced) tensors the module holds."""
    if isinstance(owner, nn.modules.conv._ConvNd):
        weight = owner.weight
        if owner.transposed:
            owner.in_channels, owner.out_channels = weight.shape[0], weight.shape[1] * owner.groups
        else:
            owner.out_channels, owner.in_channels = weight.shape[0], weight.shape[1] * owner.groups
    elif isinstance(owner, nn.modules.batchnorm._NormBase):
        owner.num_features = (owner.weight if owner.weight is not None else owner.running_mean).shape[0]
    elif isinstance(owner, nn.Linear):
        owner.out_features, owner.in_features = owner.weight.shape
    elif isinstance(owner, nn.LayerNorm) and owner.weight is not None:
        owner.normalized_shape = tuple(owner.weight.shape)
    elif isinstance(owner, nn.GroupNorm):
        owner.num_channels = owner.weight.shape[0]
    elif isinstance(owner, nn.PReLU):
        owner.num_parameters = owner.weight.numel()
