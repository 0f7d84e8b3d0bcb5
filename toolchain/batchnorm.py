"""BatchNorm statistics re-estimated after pruning, in the torch weights and the ONNX model alike.

A pruned layer's outputs have another distribution, but its BatchNorm still normalises them with the
unpruned model's running mean and variance: in eval mode the pruned network then computes next to
nothing. ResNet-20 on Fashion-MNIST (80.17% unpruned), 12.5% of every layer's channels removed (L1):
14.83% as pruned, 75.28% once 16 batches of 32 training images re-estimated the statistics; 25% removed:
11.44% -> 59.73% (bench/batchnorm_after_pruning.py). Fine-tuning estimates them again anyway (train mode
normalises with batch statistics), so this changes what a pruned model scores before fine-tuning, and
what `build` gets when nobody fine-tunes, not what fine-tuning reaches.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import onnx
import torch
from safetensors.torch import save_file
from torch import nn

from graphs.atomic import atomic_dir, write_json
from graphs.onnx_io import load_model, require_input_shape, save_model

STATS = ("running_mean", "running_var")


def norms(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats]


def recalibrate(module: nn.Module, batches, limit: int | None = None) -> int:
    """Set every BatchNorm's running statistics to their average over `batches` (an iterable of input
    tensors, or of (input, label) pairs), at most `limit` of them; returns how many images were seen.
    Only the norms run in train mode: the model's own train mode may change its graph (aux heads, dropout)."""
    found = [m for _, m in norms(module)]
    momenta = [m.momentum for m in found]
    for m in found:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if limit is not None and i >= limit:
                    break
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                seen += x.shape[0]
                module(torch.cat([x, x]) if x.shape[0] == 1 else x)  # train-mode BatchNorm needs two values a channel
    finally:
        for m, momentum in zip(found, momenta):
            m.momentum = momentum
        module.eval()
    return seen


def onnx_with_stats(module: nn.Module, model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` whose BatchNorm statistics initializers (matched by the torch buffer's name) hold
    the module's; and the module's statistics that have no initializer of that name."""
    state = {f"{name}.{stat}": getattr(m, stat) for name, m in norms(module) for stat in STATS}
    model = onnx.ModelProto.FromString(model.SerializeToString())
    found = set()
    for init in model.graph.initializer:
        if init.name in state:
            init.CopyFrom(onnx.numpy_helper.from_array(state[init.name].detach().numpy(), init.name))
            found.add(init.name)
    return model, sorted(set(state) - found)


def recalibrated(module: nn.Module, model: onnx.ModelProto, loader, batches: int) -> tuple[onnx.ModelProto, dict]:
    """`module`'s statistics re-estimated on `batches` batches of `loader` (in place) and `model` with them,
    with the record for a summary.json; `module` and `model` unchanged where the ONNX model does not name
    its statistics as torch does, or where the two would no longer compute the same function."""
    from toolchain.verify import verify_module

    if not norms(module):
        return model, {"recalibrated": False, "why": "no BatchNorm with running statistics"}
    trial = copy.deepcopy(module)
    images = recalibrate(trial, loader, batches)
    updated, unmatched = onnx_with_stats(trial, model)
    if unmatched:
        return model, {"recalibrated": False, "why": f"the ONNX model has no initializer {unmatched[0]} "
                       f"({len(unmatched)} statistics unmatched)"}
    check = verify_module(copy.deepcopy(trial), updated, require_input_shape(updated))  # it may reset norms
    if not check.parity.ok:  # never a pair that computes different functions
        return model, {"recalibrated": False, "why": f"parity lost (max abs diff {check.parity.max_diff:.3g})"}
    module.load_state_dict(trial.state_dict())
    return updated, {"recalibrated": True, "images": images, "norms": len(norms(module))}


def recalibrate_dir(directory: str | Path, loader, batches: int) -> dict:
    """`recalibrated` on a pruned directory, its weights and model.onnx rewritten (the caller owns
    `directory`: an atomic write's temporary one); the record for its summary.json, which says why
    nothing changed where there is no data or no torch module."""
    from toolchain.onnx_only import is_onnx_only
    from toolchain.pruned_dir import load_pruned_module

    directory = Path(directory)
    if loader is None or batches < 1:
        return {"recalibrated": False, "why": "no data given" if loader is None else "switched off (0 batches)"}
    if is_onnx_only(directory):
        return {"recalibrated": False, "why": "no torch module (pruned from ONNX alone)"}
    module = load_pruned_module(directory)
    model, record = recalibrated(module, load_model(directory / "model.onnx"), loader, batches)
    if record["recalibrated"]:
        save_model(model, directory / "model.onnx")
        spec = json.loads((directory / "summary.json").read_text()).get("spec") or ""
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(directory / "weights.safetensors"), metadata={"spec": spec})
    return record


def recalibrate_pruned_dir(directory: str | Path, loader, batches: int) -> dict:
    """`recalibrate_dir` on a finished pruned directory, swapped in at once, its summary.json recording it."""
    with atomic_dir(directory, start_from=directory) as tmp:
        record = recalibrate_dir(tmp, loader, batches)
        summary = json.loads((tmp / "summary.json").read_text())
        write_json({**summary, "batchnorm": record}, tmp / "summary.json")
    return record
