"""`compress prune FILE.onnx` without a torch source (plain `torch.onnx.export`, BatchNorm folded, other
exporters): the graph is pruned and checked against the original graph with the same channels masked
(graphs.masking), by onnxruntime alone. DIR holds the same four files; weights.safetensors holds the
pruned graph's float initializers by name, and plan.json names no spec.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from graphs.deps import analyze
from graphs.errors import InputError
from graphs.masking import masked_parity
from graphs.onnx_io import load_model, model_input_shape, model_sha256, require_input_shape
from graphs.parity import Parity
from graphs.plan import Plan, load_plan
from graphs.stats import count_macs, count_params
from graphs.surgery import apply_plan
from toolchain.pruned_dir import write_pruned_dir

__all__ = ["initializer_module", "is_onnx_only", "prune_onnx_only", "verify_onnx_only"]

FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def prune_onnx_only(onnx_path: str, out_dir: str, plan: Plan, seed: int = 0, extra: dict | None = None) -> dict:
    model = load_model(onnx_path)
    if not any(i.data_type in FLOATS for i in model.graph.initializer):
        raise InputError(f"{onnx_path}: the graph has no weight initializers, nothing to prune")
    if model_input_shape(model) is None:
        raise InputError(f"{onnx_path}: its input has symbolic dims besides the batch: checking without the torch "
                         "source needs a fixed input size; export with one")
    analysis = analyze(model)
    if not any(g.prunable for g in analysis.groups) and not plan.remove:
        frozen = next((g for g in analysis.groups if g.reason and g.reason != "graph input"), None)
        raise InputError(f"{onnx_path}: no channel group can be pruned"
                         + (f" (e.g. {frozen.id}: {frozen.reason})" if frozen else ""))
    pruned, edits = apply_plan(model, plan, analysis=analysis, seed=seed)
    plan.model = {**plan.model, "onnx_sha256": model_sha256(model), "spec": None, "input_shape": analysis.input_shape}
    plan.notes = edits.notes
    plan.channels = {**(plan.channels or {}), **{gid: {"keep": keep} for gid, keep in edits.kept.items()}}
    check = masked_parity(model, pruned, plan, analysis.input_shape, seed=seed)
    if not check.ok:
        raise InputError(f"the pruned graph differs from the original with the same channels masked (max abs diff "
                         f"{check.max_diff:.3g} > {check.tolerance:.3g}): an op surgery does not handle")
    blocks = {b.id: b for b in analysis.blocks}
    summary = {
        "spec": None, "onnx_only": True, "source_onnx": str(Path(onnx_path).resolve()), "num_classes": None,
        "params": {"before": count_params(model), "after": count_params(pruned)},
        "macs": {"before": count_macs(model), "after": count_macs(pruned)},
        "groups": [{"id": g.id, "before": g.channels, "after": len(edits.kept.get(g.id, range(g.channels))),
                    "prunable": g.prunable} for g in analysis.groups],
        "removed": [{"id": b, "kind": blocks[b].kind, "members": blocks[b].members} for b in plan.remove],
        "structure": {}, "notes": edits.notes,
        "masked_parity": {"max_abs_diff": check.max_diff, "tolerance": check.tolerance, "output_scale": check.scale},
        **(extra or {}),
    }
    state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in pruned.graph.initializer
             if i.data_type in FLOATS}
    write_pruned_dir(out_dir, pruned, plan, state, summary)
    return summary


def initializer_module(model: onnx.ModelProto) -> torch.nn.Module:
    """The graph's float initializers as an nn.Module's parameters under their own names ('layer1.0.conv1.weight'
    becomes submodules layer1 -> 0 -> conv1): what the weight criteria read, with no torch source. Names
    that cannot be placed (a parameter that is also a prefix of another) are left out; they score nothing."""
    root = torch.nn.Module()
    for init in model.graph.initializer:
        if init.data_type not in FLOATS or not init.name:
            continue
        *path, leaf = init.name.split(".")
        node = root
        try:
            for part in path:
                if not hasattr(node, part):
                    node.add_module(part, torch.nn.Module())
                node = getattr(node, part)
                if not isinstance(node, torch.nn.Module):
                    raise KeyError(part)
            value = torch.from_numpy(numpy_helper.to_array(init).astype("float32"))
            node.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
        except (KeyError, ValueError):
            continue
    return root


def is_onnx_only(directory: str | Path) -> bool:
    try:
        return bool(json.loads((Path(directory) / "summary.json").read_text()).get("onnx_only"))
    except (OSError, ValueError, AttributeError):
        return False  # the torch path reports what is wrong with the directory


def verify_onnx_only(directory: str | Path, seed: int = 0) -> Parity:
    """DIR/model.onnx against its source ONNX with the plan's channels masked."""
    directory = Path(directory)
    source = json.loads((directory / "summary.json").read_text()).get("source_onnx")
    if not source or not Path(source).is_file():
        raise InputError(f"{directory}: verifying a model pruned without torch needs its source ONNX, "
                         f"{source or 'unrecorded'}, which is not there")
    original = load_model(source)
    plan = load_plan(directory / "plan.json")
    if plan.model.get("onnx_sha256") and plan.model["onnx_sha256"] != model_sha256(original):
        raise InputError(f"{source} changed since it was pruned (its sha256 differs from the plan's)")
    return masked_parity(original, load_model(directory / "model.onnx"), plan, require_input_shape(original, source), seed=seed)
