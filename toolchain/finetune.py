"""`compress finetune DIR`: recover accuracy of a pruned model in torch, then put the trained
weights back into DIR/model.onnx by name (the same graph, new values) and check parity."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from safetensors.torch import save_file

from graphs.atomic import atomic_dir
from graphs.errors import InputError
from graphs.onnx_io import load_model, require_input_shape, save_model
from graphs.plan import load_plan
from toolchain.data import make_loader
from toolchain.train import TrainConfig, evaluate, train, write_history
from toolchain.pruned_dir import load_pruned_module
from toolchain.verify import verify_module


class ParityLost(Exception):
    """The fine-tuned ONNX no longer matches the torch module (a bug, reported as exit 1)."""


def teacher_for(directory: Path) -> torch.nn.Module:
    from toolchain.torch_source import torch_module_for

    source = json.loads((directory / "summary.json").read_text()).get("source_onnx")
    if not source or not Path(source).is_file():
        raise InputError(f"--distill needs the unpruned model, {source or 'unrecorded'}, which is not there")
    return torch_module_for(load_model(source))[0].eval()


def finetune_dir(directory: str | Path, data: str, config: TrainConfig, distill: bool = False,
                 progress=None, on_epoch=None) -> dict:
    directory = Path(directory)
    module = load_pruned_module(directory)
    model = load_model(directory / "model.onnx")  # a broken model.onnx is refused before an epoch is spent
    plan = load_plan(directory / "plan.json")
    shape = tuple(plan.model.get("input_shape") or require_input_shape(model, str(directory / "model.onnx")))
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
    result = {"data": data, "before": before, "after": after, "teacher": teacher_metrics}
    model = _with_weights(load_model(directory / "model.onnx"), module, shape)
    # One directory swap: model.onnx, its weights and train.json never disagree, even after a kill.
    with atomic_dir(directory, start_from=directory) as tmp:
        save_file(_state(module), str(tmp / "weights.safetensors"), metadata={"finetuned": "1"})
        save_model(model, tmp / "model.onnx")
        write_history(tmp / "train.json", config, history, result)
    return {**result, "history": history}


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
