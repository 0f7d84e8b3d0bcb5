"""`compress prune`: Plan -> pruned ONNX + synced torch weights + summary, written atomically."""
from __future__ import annotations

from pathlib import Path

import torch

from graphs.deps import Analysis, analyze
from graphs.errors import InputError
from graphs.onnx_io import load_model, model_metadata, model_sha256, require_input_shape
from graphs.plan import Plan
from graphs.stats import count_macs, count_params
from graphs.surgery import apply_plan
from toolchain.sync import apply_edits
from toolchain.sync_check import check_synced
from toolchain.onnx_only import prune_onnx_only
from toolchain.pruned_dir import write_pruned_dir
from toolchain.torch_source import torch_module_for


def uniform_plan(analysis: Analysis, ratio: float, round_to: int = 1) -> Plan:
    """Remove a fraction `ratio` of every prunable group's channels (the simple baseline)."""
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"--ratio must be in [0, 1), got {ratio}")
    channels = {g.id: {"count": max(1, int(round(g.channels * (1.0 - ratio))))} for g in analysis.groups if g.prunable}
    return Plan(channels=channels, round_to=round_to, provenance={"criterion": "l1", "solver": "uniform", "ratio": ratio})


def prune_to_dir(onnx_path: str, out_dir: str, plan: Plan, spec: str | None = None, seed: int = 0,
                 module: torch.nn.Module | None = None, structure: dict | None = None,
                 extra: dict | None = None, analysis: Analysis | None = None) -> dict:
    """Apply `plan` to the ONNX model and its torch module; write DIR/{model.onnx, plan.json,
    weights.safetensors, summary.json} all at once (a temporary directory renamed at the end).

    `module` and `structure` continue from an earlier pruning (a multi-stage schedule): the module
    already pruned, and the structure its summary recorded. `analysis` is the caller's analysis of
    the same model (computed once per model and passed on).
    """
    model = load_model(onnx_path)
    if module is None and not (spec or model_metadata(model).get("compress.spec")):
        return prune_onnx_only(onnx_path, out_dir, plan, seed=seed, extra=extra)
    analysis = analysis or analyze(model)
    if module is None:
        module, spec = torch_module_for(model, spec)
    else:
        spec = spec or model_metadata(model).get("compress.spec")
    pruned, edits = apply_plan(model, plan, analysis=analysis, seed=seed)  # checks plan.model's hash
    plan.model = {**plan.model, "onnx_sha256": model_sha256(model), "spec": spec, "input_shape": analysis.input_shape}
    apply_edits(module, edits)
    check_synced(module, pruned, analysis.input_shape or require_input_shape(model, str(onnx_path)), list(edits.slices))
    plan.notes = edits.notes
    plan.reinit = {**plan.reinit, **edits.reinit_record}  # surgery reports it; the Plan records it here
    if not plan.channels:
        plan.channels = {}
    for gid, keep in edits.kept.items():
        plan.channels[gid] = {"keep": keep}  # record the exact channels chosen

    blocks = {b.id: b for b in analysis.blocks}
    summary = {
        "spec": spec,
        "source_onnx": str(Path(onnx_path).resolve()),
        "num_classes": int(model_metadata(model)["compress.num_classes"]) if "compress.num_classes" in model_metadata(model) else None,
        "params": {"before": count_params(model), "after": count_params(pruned)},
        "macs": {"before": count_macs(model), "after": count_macs(pruned)},
        "groups": [{"id": g.id, "before": g.channels, "after": len(edits.kept.get(g.id, range(g.channels))),
                    "prunable": g.prunable} for g in analysis.groups],
        "removed": [{"id": b, "kind": blocks[b].kind, "members": blocks[b].members} for b in plan.remove],
        "structure": _merge_structure(structure or {}, edits),
        "notes": edits.notes,
        **(extra or {}),
    }
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    write_pruned_dir(out_dir, pruned, plan, state, summary)
    return summary


def _merge_structure(previous: dict, edits) -> dict:
    """What rebuilds the pruned torch module from its spec: modules now identity, conv group counts."""
    return {"identity_modules": list(previous.get("identity_modules", [])) + list(edits.removed),
            "conv_groups": {**previous.get("conv_groups", {}), **edits.conv_groups},
            "reinit": sorted(set(previous.get("reinit", [])) | set(edits.reinit))}
