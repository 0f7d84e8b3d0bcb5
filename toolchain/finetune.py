"""`compress finetune DIR`: recover accuracy of a pruned model in torch, then put the trained
weights back into DIR/model.onnx by name (the same graph, new values) and check parity."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from safetensors.torch import save_file

from graphs.errors import InputError
from graphs.onnx_io import load_model, save_model
from graphs.plan import load_plan
from toolchain.data import make_loader
from toolchain.train import TrainConfig, evaluate, train, write_history
from toolchain.verify import load_pruned_module, verify_module


class ParityLost(Exception):
    """The fine-tuned ONNX no longer matches the torch module (a bug, reported as exit 1)."""


def teacher_for(directory: Path) -> torch.nn.Module:
    from toolchain.prune import torch_module_for

    source = json.loads((directory / "summary.json").read_text()).get("source_onnx")
    if not source or not Path(source).is_file():
        raise InputError(f"--distill needs the unpruned model, {source or 'unrecorded'}, which is not there")
    return torch_module_for(load_model(source))[0].eval()


def finetune_dir(directory: str | Path, data: str, config: TrainConfig, distill: bool = False,
                 progress=None, on_epoch=None) -> dict:
    directory = Path(directory)
    module = load_pruned_module(directory)
    load_model(directory / "model.onnx")  # a broken model.onnx is refused before an epoch is spent
    plan = load_plan(directory / "plan.json")
    shape = tuple(plan.model.get("input_shape") or (1, 3, 224, 224))
    train_loader = make_loader(data, shape, "train", config.batch_size, seed=config.seed, augment=True, shuffle=True)
    val_loader = make_loader(data, shape, "val", 256, seed=config.seed)
    teacher = teacher_for(directory) if distill else None
    config.distill = distill
    before = evaluate(module, val_loader)
    history = train(module, train_loader, val_loader, config, checkpoint_dir=directory / "finetune",
                    teacher=teacher, progress=progress, on_epoch=on_epoch)
    module = module.cpu().eval()
    after = evaluate(module, val_loader, torch.device("cpu"))
    teacher_metrics = evaluate(teacher, val_loader, torch.device("cpu")) if teacher is not None else None
    _write_weights(directory, module, shape)
    result = {"data": data, "before": before, "after": after, "teacher": teacher_metrics}
    write_history(directory / "train.json", config, history, result)
    return {**result, "history": history}


def _write_weights(directory: Path, module: torch.nn.Module, shape) -> None:
    state = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    model = load_model(directory / "model.onnx")
    for init in model.graph.initializer:
        if init.name in state and tuple(init.dims) == tuple(state[init.name].shape):
            init.CopyFrom(onnx.numpy_helper.from_array(state[init.name].numpy(), init.name))
    result = verify_module(module, model, shape)
    if not result.parity.ok:
        raise ParityLost(f"fine-tuned weights break parity: max abs diff {result.parity.max_diff:.3g}")
    tmp = directory / ".weights.safetensors.tmp"
    save_file(state, str(tmp), metadata={"finetuned": "1"})
    save_model(model, directory / "model.onnx")
    tmp.replace(directory / "weights.safetensors")
