"""`compress verify DIR`: does the synced torch module compute what DIR/model.onnx computes?"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from graphs.onnx_io import load_model, require_input_shape
from graphs.plan import load_plan
from graphs.parity import Parity, parity
from toolchain.batchnorm import onnx_with_stats, recalibrate
from toolchain.latency.backends import OnnxSource, get_backend
from toolchain.onnx_only import is_onnx_only, verify_onnx_only
from toolchain.outputs import flatten_outputs
from toolchain.pruned_dir import load_pruned_module


@dataclass
class VerifyResult:
    parity: Parity
    recalibrated: bool  # BatchNorm statistics were set from the verification input first

    def as_dict(self) -> dict:
        return {"ok": self.parity.ok, "max_abs_diff": self.parity.max_diff, "output_scale": self.parity.scale,
                "tolerance": self.parity.tolerance, "degenerate_scale": self.parity.degenerate,
                "bn_recalibrated": self.recalibrated}


def verify_module(module: torch.nn.Module, model: onnx.ModelProto, input_shape, batch: int = 2,
                  seed: int = 0) -> VerifyResult:
    """Run both on the same seeded input; if the output scale is degenerate, set BatchNorm statistics
    from the input in torch, copy them into the ONNX by name, and compare again."""
    shape = (batch, *input_shape[1:])
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    result = _compare(module, model, x)
    if not result.degenerate:
        return VerifyResult(result, False)
    model = _with_recalibrated_bn(module, model, x)
    return VerifyResult(_compare(module, model, x), True)


def _compare(module, model, x) -> Parity:
    with torch.no_grad():
        out = module(x)
    outs = [o.numpy() for o in flatten_outputs(out)]
    with get_backend("ort").prepare(OnnxSource(model), batch=x.shape[0]) as runner:
        return parity(outs, runner.infer({model.graph.input[0].name: x.numpy()}))


def _with_recalibrated_bn(module, model, x) -> onnx.ModelProto:
    recalibrate(module, x.split(1))  # one input at a time (each doubled): as verification always has
    return onnx_with_stats(module, model)[0]


def verify_dir(directory: str | Path, batch: int = 2, seed: int = 0) -> VerifyResult:
    directory = Path(directory)
    if is_onnx_only(directory) and (directory / "train.json").is_file():  # fine-tuned: trained values
        from toolchain.onnx_torch import verify_finetuned

        return VerifyResult(verify_finetuned(directory, seed=seed), False)
    if is_onnx_only(directory):  # pruned without a torch source: against the masked original graph
        return VerifyResult(verify_onnx_only(directory, seed=seed), False)
    module = load_pruned_module(directory)
    model = load_model(directory / "model.onnx")
    plan = load_plan(directory / "plan.json")
    input_shape = plan.model.get("input_shape") or require_input_shape(model, str(directory / "model.onnx"))
    return verify_module(module, model, input_shape, batch=batch, seed=seed)
