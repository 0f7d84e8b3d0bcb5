"""onnxruntime backend: CPU by default, CUDA / TensorRT execution providers when asked."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from graphs.errors import InputError
from toolchain.latency.cpu import cpu_channel_block, cpu_name
from toolchain.latency.backends.base import require

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
           "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


def _ort():
    return require("onnxruntime", "onnxruntime is not installed: pip install onnxruntime "
                   "(or onnxruntime-gpu for CUDA/TensorRT providers; never both)")


def fixed_inputs(session, batch: int, seed: int = 0) -> dict:
    """Seeded random inputs in the model's shapes, batch dim replaced by `batch`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = list(inp.shape)
        if shape and (not isinstance(shape[0], int) or shape[0] == batch or shape[0] <= 0):
            shape[0] = batch
        elif shape:
            raise InputError(f"input {inp.name!r} has a fixed batch of {shape[0]}, asked for batch {batch}: "
                             "export with a dynamic batch dimension")
        if any(not isinstance(d, int) or d <= 0 for d in shape):
            raise InputError(f"input {inp.name!r} has symbolic dims {inp.shape} besides the batch: "
                             "export with a fixed input shape")
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise InputError(f"input {inp.name!r} has unsupported type {inp.type}")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


class OrtRunner:
    def __init__(self, session, feeds: dict):
        self.session, self.feeds = session, feeds

    def run(self):
        return self.session.run(None, self.feeds)

    def close(self) -> None:
        self.session = None


class OrtBackend:
    name = "ort"

    def __init__(self, provider: str = "cpu", threads: int | None = None, spinning: bool = True,
                 precision: str = "fp32", seed: int = 0):
        if provider not in _PROVIDERS:
            raise InputError(f"unknown onnxruntime provider {provider!r}: known are {', '.join(_PROVIDERS)}")
        self.provider, self.precision, self.seed = provider, precision, seed
        self.threads = threads or os.cpu_count() or 1
        # spinning=False stops idle worker threads stealing a core from an interleaved session, but
        # adds wake-up cost to every call (PLATFORM.md); the protocol pauses instead by default.
        self.spinning = spinning

    def prepare(self, model, batch: int = 1) -> OrtRunner:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # provider fallback warnings are checked below, not printed
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        asked = _PROVIDERS[self.provider]
        providers = [asked] + (["CUDAExecutionProvider"] if self.provider == "tensorrt" else [])
        providers += ["CPUExecutionProvider"] if asked != "CPUExecutionProvider" else []
        source = model if isinstance(model, (bytes, bytearray)) else str(model)
        if not isinstance(model, (bytes, bytearray)) and not Path(source).is_file():
            raise InputError(f"ONNX file not found: {source}")
        try:
            with warnings.catch_warnings():  # "provider not available" is checked, and said, below
                warnings.simplefilter("ignore", UserWarning)
                session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        except InputError:
            raise
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types for unreadable models
            raise InputError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from None
        # get_available_providers() lists what the wheel knows, not what loaded: ask the session.
        active = session.get_providers()
        if not active or active[0] != asked:
            raise InputError(f"onnxruntime provider {asked} is not active (session runs on {active}): "
                             f"install onnxruntime-gpu with a working CUDA{' + TensorRT' if self.provider == 'tensorrt' else ''}, "
                             "or use --backend ort on the CPU")
        return OrtRunner(session, fixed_inputs(session, batch, self.seed))

    def channel_alignment(self) -> int:
        """The width multiple this backend runs best at: the default `round_to` for tables and solvers."""
        return cpu_channel_block() if self.provider == "cpu" else 8  # GPU providers: FP32/TF32 tensor cores

    def device(self) -> dict:
        ort = _ort()
        name = cpu_name()
        if self.provider != "cpu":
            try:
                import torch
                name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else name
            except ImportError:
                pass
        return {"device": name, "runtime": "onnxruntime", "runtime_version": ort.__version__,
                "provider": _PROVIDERS[self.provider], "threads": self.threads,
                "spinning": self.spinning, "precision": self.precision}
