"""onnxruntime backend: CPU by default, CUDA / TensorRT execution providers (onnxruntime-gpu) when asked.

Inference goes through Polygraphy's OnnxrtRunner on the session built here (the session options
that matter for timing - threads, spinning, provider options - are set by this loader). On the GPU
providers the fixed timing input is bound on the device once (IOBinding), so timed calls exclude
host<->device copies.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from graphs.errors import InputError
from toolchain.latency.backends.base import PRECISIONS, Artifact, RunnerBase, require, seeded_inputs
from toolchain.latency.cpu import cpu_channel_block, cpu_name, int8_dot_saturates, usable_cpus
from toolchain.latency.backends.source import OnnxSource, as_source, onnx_at_precision

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_GPU_INSTALL = "pip install -e '.[gpu]' (onnxruntime-gpu, which replaces onnxruntime: never both)"
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
           "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


def _ort():
    return require("onnxruntime", "onnxruntime is not installed: pip install onnxruntime "
                   "(or onnxruntime-gpu for CUDA/TensorRT providers; never both)")


def input_specs(session, batch: int, exported: list[int] | None = None) -> dict:
    """{name: (shape, dtype)} of the session's inputs with the batch dim set to `batch`; other symbolic
    dims of a single input take the exported input shape (`exported`, N,C,H,W) when there is one."""
    specs = {}
    single = len(session.get_inputs()) == 1
    for inp in session.get_inputs():
        shape = list(inp.shape)
        if single and exported and len(exported) == len(shape):
            shape = [d if isinstance(d, int) and d > 0 or i == 0 else exported[i] for i, d in enumerate(shape)]
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
        specs[inp.name] = (tuple(shape), np.dtype(dtype))
    return specs


class OrtRunner(RunnerBase):
    def __init__(self, session, feeds: dict, on_device: bool):
        from polygraphy.backend.onnxrt import OnnxrtRunner

        self.session, self.feeds = session, feeds
        self.inputs = {n: (a.shape, a.dtype) for n, a in feeds.items()}
        self._poly = OnnxrtRunner(session)
        self._poly.activate()
        self._binding = self._bind(feeds) if on_device else None

    def _bind(self, feeds: dict):
        """Inputs copied to the GPU once, outputs left there: timed calls move no data over PCIe."""
        ort = _ort()
        binding = self.session.io_binding()
        self._device_inputs = [ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for a in feeds.values()]
        for name, value in zip(feeds, self._device_inputs):
            binding.bind_ortvalue_input(name, value)
        for out in self.session.get_outputs():
            binding.bind_output(out.name, "cuda", 0)
        return binding

    def infer(self, feed: dict) -> list[np.ndarray]:
        return [np.asarray(v) for v in self._poly.infer(feed, check_inputs=False).values()]

    def run(self) -> None:
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)  # returns when the device is done
        else:
            self.session.run(None, self.feeds)

    def close(self) -> None:
        if self._poly is not None and self._poly.is_active:
            self._poly.deactivate()
        self._poly = self._binding = self.session = None


class OrtBackend:
    name = "ort"
    artifact_name = "model.onnx"

    def __init__(self, provider: str | None = "cpu", threads: int | None = None, spinning: bool = True,
                 precision: str = "fp32", seed: int = 0, cache_dir: str | os.PathLike | None = None):
        provider = provider or "cpu"
        if provider not in _PROVIDERS:
            raise InputError(f"unknown onnxruntime provider {provider!r}: known are {', '.join(_PROVIDERS)}")
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}: known are {', '.join(PRECISIONS)}")
        self.provider, self.precision, self.seed = provider, precision, seed
        self.threads = threads or usable_cpus()
        # spinning=False stops idle worker threads stealing a core from an interleaved session, but
        # adds wake-up cost to every call (PLATFORM.md); the protocol pauses instead by default.
        self.spinning = spinning
        self.cache_dir = Path(cache_dir) if cache_dir else Path(
            os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compress" / "ort-trt"
        if provider != "cpu" and _PROVIDERS[provider] not in _ort().get_available_providers():
            raise InputError(f"onnxruntime {_ort().__version__} here has no {_PROVIDERS[provider]}: {_GPU_INSTALL}")

    def provider_options(self) -> dict:
        """The execution provider's options: device, precision and engine cache (TensorRT EP)."""
        if self.provider == "cuda":
            return {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE"}
        if self.provider == "tensorrt":
            return {"device_id": 0, "trt_fp16_enable": self.precision in ("fp16", "int8"),
                    "trt_int8_enable": self.precision == "int8",
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.cache_dir),
                    "trt_timing_cache_enable": True}
        return {}

    def session(self, data: bytes):
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # provider fallback warnings are checked below, not printed
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        asked = _PROVIDERS[self.provider]
        providers = [(asked, self.provider_options())] if self.provider != "cpu" else []
        providers += [("CUDAExecutionProvider", {"device_id": 0})] if self.provider == "tensorrt" else []
        providers += ["CPUExecutionProvider"]
        if self.provider == "tensorrt":
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():  # "provider not available" is checked, and said, below
                warnings.simplefilter("ignore", UserWarning)
                session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types for unreadable models
            raise InputError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from None
        # get_available_providers() lists what the wheel knows, not what loaded: ask the session.
        active = session.get_providers()
        if not active or active[0] != asked:
            raise InputError(f"onnxruntime provider {asked} is not active (session runs on {active}): "
                             f"needs a working CUDA{' + TensorRT' if self.provider == 'tensorrt' else ''} "
                             f"and {_GPU_INSTALL}, or use --provider cpu")
        return session

    def prepare(self, model, batch: int = 1) -> OrtRunner:
        source = as_source(model)
        # fp16: an FP16 ONNX, except on the TensorRT EP (its trt_fp16_enable); int8: a QDQ ONNX
        data = onnx_at_precision(source.onnx_bytes(), self.precision, convert_fp16=self.provider != "tensorrt",
                                 tensorrt=self.provider == "tensorrt", seed=self.seed)
        session = self.session(data)
        try:
            exported = source.input_shape()
        except (InputError, IndexError, ValueError):
            exported = None  # no recorded shape: only the graph's own dims
        feeds = seeded_inputs(input_specs(session, batch, exported), self.seed)
        return OrtRunner(session, feeds, on_device=self.provider != "cpu")

    def channel_alignment(self) -> int:
        """The width multiple this backend runs best at: the default `round_to` for tables and solvers."""
        if self.provider == "cpu":
            return cpu_channel_block()
        return 32 if self.precision == "int8" else 8  # tensor-core channel vectors

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

    def artifact(self, onnx_path, profile, calibration, workdir) -> Artifact:
        """fp32: the graph-optimised model (ORT_ENABLE_EXTENDED: fusions that stay portable, no
        CPU-specific layouts); fp16: FP16 ONNX (float32 inputs/outputs kept); int8: QDQ ONNX (calib/qdq.py)."""
        onnx_path, workdir = Path(onnx_path), Path(workdir)
        info = {"name": "ort", "runtime": "onnxruntime", "version": _ort().__version__,
                "provider": _PROVIDERS[self.provider]}
        done: dict = {}
        if self.precision == "fp32":
            data = optimized_onnx(onnx_path, workdir / "optimized.onnx")
        elif self.precision == "fp16":
            from calib.fp16 import to_fp16_bytes

            data = to_fp16_bytes(onnx_path.read_bytes())
        else:
            if calibration is None or calibration.int8_mode != "qdq":
                raise InputError("INT8 for onnxruntime is a QDQ model: give --calib DATA (no calibrator mode)")
            from calib.qdq import quantize_qdq

            done = quantize_qdq(onnx_path, workdir / "qdq.onnx", calibration.data, calibration.digest,
                                input_name=calibration.input_name, method=calibration.method,
                                cache_dir=calibration.cache_dir, reduce_range=int8_dot_saturates())
            data = (workdir / "qdq.onnx").read_bytes()
        return Artifact(data, "onnx", info, OnnxSource(data), done)


def optimized_onnx(src: Path, dst: Path) -> bytes:
    """onnxruntime's extended graph optimisations (Conv+BN, Conv+Relu fusions...) of src, via dst."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise InputError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from None
    return dst.read_bytes()
