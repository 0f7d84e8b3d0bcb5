"""A pruned directory, `compress prune`'s one artifact: DIR/{model.onnx, plan.json, weights.safetensors,
summary.json}, written once and completely (a temporary directory renamed at the end), and the
torch module rebuilt from it."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from safetensors.torch import load_file, save_file

from graphs.atomic import atomic_dir, write_json
from graphs.errors import InputError
from graphs.onnx_io import save_model
from graphs.plan import Plan, load_plan
from toolchain.sync import replace_tensor
from toolchain.widths import fix_all_widths
from toolchain.zoo import build_model

FILES = ("plan.json", "summary.json", "weights.safetensors", "model.onnx")


def write_pruned_dir(out_dir: str | Path, model: onnx.ModelProto, plan: Plan, state: dict[str, torch.Tensor],
                     summary: dict) -> None:
    """All four files in one rename: DIR is the old one or the new one, never a mix."""
    with atomic_dir(out_dir) as tmp:
        save_model(model, tmp / "model.onnx")
        write_json(plan.to_dict(), tmp / "plan.json")
        save_file(state, str(tmp / "weights.safetensors"), metadata={"spec": summary["spec"] or ""})
        write_json(summary, tmp / "summary.json")


def load_pruned_module(directory: str | Path) -> torch.nn.Module:
    """Rebuild the pruned torch module from the plan's spec, the summary's structure and the weights."""
    directory = Path(directory)
    for name in FILES:
        if not (directory / name).is_file():
            raise InputError(f"{directory}: no {name} (is it a `compress prune` output directory?)")
    plan = load_plan(directory / "plan.json")
    try:
        summary = json.loads((directory / "summary.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{directory}/summary.json: not valid JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise InputError(f"{directory}/summary.json: not a JSON object")
    structure = summary.get("structure", {})
    spec = plan.model.get("spec")
    if not spec:
        raise InputError(f"{directory}/plan.json does not name the torch model (model.spec)")
    classes = summary.get("num_classes")
    module = build_model(spec, num_classes=classes)
    try:
        state = load_file(str(directory / "weights.safetensors"))
    except Exception as exc:  # SafetensorError: truncated or not a safetensors file
        raise InputError(f"{directory}/weights.safetensors is unreadable ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    for name in structure.get("identity_modules", []):
        module.set_submodule(name, torch.nn.Identity())
    current = module.state_dict()
    unknown = [k for k in state if k not in current]
    if unknown:
        raise InputError(f"{directory}/weights.safetensors does not fit {spec}: unexpected {unknown[0]}")
    with torch.no_grad():
        for name, value in state.items():
            replace_tensor(module, name, value)
    for weight_name, groups in structure.get("conv_groups", {}).items():
        owner = weight_name.rsplit(".", 1)[0]
        if not any(owner == r or owner.startswith(r + ".") for r in structure.get("identity_modules", [])):
            module.get_submodule(owner).groups = groups
    fix_all_widths(module)
    return module.eval()
