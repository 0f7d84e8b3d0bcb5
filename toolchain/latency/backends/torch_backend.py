"""Eager PyTorch backend: the model as trained, for comparison with the exported runtimes."""
from __future__ import annotations

import os

from graphs.errors import InputError
from toolchain.latency.backends.base import require
from toolchain.latency.cpu import cpu_channel_block, cpu_name


class TorchRunner:
    def __init__(self, torch, module, x, sync: bool):
        self.torch, self.module, self.x, self.sync = torch, module, x, sync

    def run(self):
        with self.torch.inference_mode():
            out = self.module(self.x)
        if self.sync:  # CUDA launches are async: the call is over when the GPU is done
            self.torch.cuda.synchronize()
        return out

    def close(self) -> None:
        self.module = self.x = None


class TorchBackend:
    name = "torch"

    def __init__(self, device: str | None = None, threads: int | None = None, seed: int = 0):
        self.torch = require("torch", "PyTorch is not installed: pip install torch")
        self.dev = device or ("cuda" if self.torch.cuda.is_available() else "cpu")
        if self.dev.startswith("cuda") and not self.torch.cuda.is_available():
            raise InputError("torch backend asked for CUDA but torch sees no GPU: use device='cpu'")
        self.threads, self.seed = threads or os.cpu_count() or 1, seed

    def prepare(self, model, batch: int = 1, input_shape=(1, 3, 224, 224)) -> TorchRunner:
        torch = self.torch
        if not isinstance(model, torch.nn.Module):
            raise InputError("the torch backend times an nn.Module, not an ONNX file: use --backend ort")
        if self.dev == "cpu":
            torch.set_num_threads(self.threads)
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn((batch, *input_shape[1:]), generator=gen).to(self.dev)
        return TorchRunner(torch, model.eval().to(self.dev), x, sync=self.dev.startswith("cuda"))

    def channel_alignment(self) -> int:
        return 8 if self.dev.startswith("cuda") else cpu_channel_block()

    def device(self) -> dict:
        torch = self.torch
        gpu = self.dev.startswith("cuda")
        return {"device": torch.cuda.get_device_name(self.dev) if gpu else cpu_name(),
                "runtime": "torch", "runtime_version": torch.__version__,
                "provider": "cuda" if gpu else "cpu", "threads": None if gpu else self.threads,
                "precision": "fp32"}
