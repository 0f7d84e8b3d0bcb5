"""PyTorch backend: times the torch module a Plan gives (toolchain/sync), eager, on the CPU or CUDA.

The module comes from the source's `torch_module()`: for an exported ONNX, the spec's module holding
the ONNX's values; for a table candidate, that module with the candidate's Plan applied - the same
function the pruned ONNX computes, so tables can be built for torch deployments.
"""
from __future__ import annotations

import copy

import numpy as np

from graphs.errors import InputError
from toolchain.latency.backends.base import PRECISIONS, RunnerBase, require
from toolchain.latency.cpu import cpu_channel_block, cpu_name, usable_cpus
from toolchain.latency.backends.source import as_source


def _flat(out) -> list:
    """Module outputs (a tensor, or tuples/lists/dicts of them) -> tensors in order."""
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flat(v)]
    return [out]


class TorchRunner(RunnerBase):
    def __init__(self, torch, module, x, dtype):
        self.torch, self.module, self.x, self.dtype = torch, module, x, dtype
        self.cuda = x.is_cuda
        self.inputs = {"input": (tuple(x.shape), np.dtype(np.float32))}
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def infer(self, feed: dict) -> list[np.ndarray]:
        torch = self.torch
        args = [torch.from_numpy(np.ascontiguousarray(a)).to(self.x.device, self.dtype) for a in feed.values()]
        with torch.inference_mode():
            outs = _flat(self.module(*args))
        return [o.float().cpu().numpy() for o in outs]

    def run(self) -> None:
        with self.torch.inference_mode():
            self.module(self.x)
        if self.cuda:  # CUDA launches are async: the call is over when the GPU is done
            self.torch.cuda.synchronize()

    def timed_run(self) -> float:
        if not self.cuda:
            return super().timed_run()
        with self.torch.inference_mode():  # CUDA events: the GPU's time, not Python's launch overhead
            self._start.record()
            self.module(self.x)
            self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end)

    def close(self) -> None:
        self.module = self.x = None


class TorchBackend:
    name = "torch"
    artifact_name = "model.safetensors"

    def __init__(self, provider: str | None = None, threads: int | None = None, precision: str = "fp32",
                 seed: int = 0):
        self.torch = require("torch", "PyTorch is not installed: pip install torch")
        self.dev = provider or ("cuda" if self.torch.cuda.is_available() else "cpu")
        if self.dev not in ("cpu", "cuda"):
            raise InputError(f"the torch backend runs on cpu or cuda, not {self.dev!r}")
        if self.dev == "cuda" and not self.torch.cuda.is_available():
            raise InputError("torch backend asked for CUDA but torch sees no GPU: use --provider cpu")
        if precision not in PRECISIONS or precision == "int8" or (precision == "fp16" and self.dev == "cpu"):
            raise InputError(f"the torch backend times fp32 (and fp16 on CUDA), not {precision} on {self.dev}")
        self.precision = precision
        self.threads, self.seed = threads or usable_cpus(), seed

    def prepare(self, model, batch: int = 1) -> TorchRunner:
        torch = self.torch
        source = as_source(model)
        module = source.torch_module()
        if not isinstance(module, torch.nn.Module):
            raise InputError(f"the torch backend needs an nn.Module, got {type(module).__name__}")
        if self.dev == "cpu":
            torch.set_num_threads(self.threads)
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        if self.dev != "cpu" or dtype != torch.float32:  # the source's cached module stays on the CPU
            module = copy.deepcopy(module)
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn((batch, *source.input_shape()[1:]), generator=gen).to(self.dev, dtype)
        return TorchRunner(torch, module.eval().to(self.dev, dtype), x, dtype)

    def artifact(self, onnx_path, profile, calibration, workdir):
        raise InputError("the torch backend deploys the pruned directory's weights.safetensors as they are: "
                         "build for --backend ort or tensorrt")

    def channel_alignment(self) -> int:
        return 8 if self.dev == "cuda" else cpu_channel_block()

    def device(self) -> dict:
        torch = self.torch
        gpu = self.dev == "cuda"
        return {"device": torch.cuda.get_device_name(0) if gpu else cpu_name(),
                "runtime": "torch", "runtime_version": torch.__version__,
                "provider": self.dev, "threads": None if gpu else self.threads,
                "precision": self.precision}
