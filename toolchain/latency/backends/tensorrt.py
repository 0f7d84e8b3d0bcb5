"""TensorRT backend, for TensorRT 10.x (JetPack 6: 10.3) and 11.x, with torch CUDA buffers (no pycuda).

Written against NVIDIA's documented Python API; it cannot run on the CPU-only project machines and is
exercised by the `gpu` tests on a GPU runner. It never returns a number unless a real engine ran.
- 10.x: FP16 / INT8 are builder flags (INT8 only with a QDQ ONNX: explicit quantization, no calibrator).
- 11.x: networks are always strongly typed and the flags are gone: FP16 means the ONNX is FP16 already,
  INT8 means the ONNX carries QuantizeLinear/DequantizeLinear.
Engines are built on the target at prepare time (they are not portable across GPUs or TRT versions);
the timing cache is persisted so rebuilding candidate after candidate stays fast.
"""
from __future__ import annotations

import os
from pathlib import Path

from graphs.errors import InputError
from toolchain.latency.backends.base import require

_INSTALL = "TensorRT is not installed: pip install tensorrt (on Jetson: it ships with JetPack)"
PRECISIONS = ("fp32", "fp16", "int8")


def _onnx_traits(data: bytes) -> tuple[bool, bool]:
    """(has FP16 tensors, has QDQ nodes): what an ONNX can run as on a strongly typed network."""
    onnx = require("onnx", "onnx is not installed: pip install onnx")
    m = onnx.load_from_string(data)
    f16 = onnx.TensorProto.FLOAT16
    fp16 = any(i.type.tensor_type.elem_type == f16 for i in m.graph.input) or \
        any(t.data_type == f16 for t in m.graph.initializer)
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
    return fp16, qdq


def _default_cache(trt) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "compress" / "tensorrt" / f"timing-{trt.__version__}.cache"


class TensorRTRunner:
    def __init__(self, torch, engine, context, buffers: dict, stream):
        self.torch, self.engine, self.context = torch, engine, context
        self.buffers, self.stream = buffers, stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def run(self):
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()  # the call is over when the GPU is done
        return self.buffers

    def timed_run(self) -> float:
        """One inference timed on the GPU with CUDA events (ms): excludes Python's own overhead."""
        self._start.record(self.stream)
        ok = self.context.execute_async_v3(self.stream.cuda_stream)
        self._end.record(self.stream)
        self._end.synchronize()
        if not ok:
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return self._start.elapsed_time(self._end)

    def close(self) -> None:
        self.context = self.engine = None
        self.buffers = {}


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, precision: str = "fp32", workspace_mb: int = 1024,
                 timing_cache: str | os.PathLike | None = None, seed: int = 0):
        self.trt = require("tensorrt", _INSTALL)
        self.torch = require("torch", "TensorRT buffers use torch CUDA tensors: pip install torch")
        if not self.torch.cuda.is_available():
            raise InputError("TensorRT needs an NVIDIA GPU, and torch sees none (CUDA unavailable)")
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}: known are {', '.join(PRECISIONS)}")
        self.major = int(self.trt.__version__.split(".")[0])
        self.precision, self.workspace = precision, workspace_mb << 20
        self.cache_path = Path(timing_cache) if timing_cache else _default_cache(self.trt)
        self.seed = seed

    def _logger(self):
        trt = self.trt

        class Logger(trt.ILogger):  # keeps errors so a failed build can name the first one
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    self.errors.append(msg)

        return Logger()

    def _config(self, builder, data: bytes, calibrated: bool = False):
        trt, config = self.trt, builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        fp16_onnx, qdq = _onnx_traits(data)
        if self.precision == "int8" and not qdq and not calibrated:
            raise InputError("INT8 with TensorRT needs a QDQ ONNX (explicit quantization): "
                             "quantize it first (compress build --calib ...)")
        if self.precision == "fp16" and self.major >= 11 and not fp16_onnx:
            raise InputError(f"TensorRT {self.trt.__version__} is strongly typed: FP16 needs an FP16 ONNX, "
                             "and this one is FP32; convert it to FP16 first")
        if self.major < 11 and self.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without Q/DQ may still run in FP16
        if self.major < 11 and self.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        cache_bytes = self.cache_path.read_bytes() if self.cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, False)  # a mismatched cache (other GPU/version) is not reused
        return config

    def _save_cache(self, config) -> None:
        data = bytes(memoryview(config.get_timing_cache().serialize()))
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, self.cache_path)  # atomic: concurrent builders never see half a cache

    def build(self, model, batch: int | tuple[int, int, int] = 1, calibrator=None) -> bytes:
        """ONNX (bytes or path) -> serialized engine.

        `batch` is a fixed batch size or a MIN:OPT:MAX profile for a dynamic batch dim. `calibrator`
        (TensorRT 10.x only) is the implicit INT8 path; everywhere else INT8 comes from a QDQ ONNX.
        """
        trt = self.trt
        dims = (batch,) * 3 if isinstance(batch, int) else tuple(batch)
        if calibrator is not None and self.major >= 11:
            raise InputError(f"TensorRT {trt.__version__} has no calibrators: use a QDQ ONNX for INT8")
        data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
        logger = self._logger()
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch on 10.x, strongly typed on 11.x
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(data):
            first = parser.get_error(0).desc() if parser.num_errors else (logger.errors or ["unknown"])[0]
            raise InputError(f"TensorRT cannot parse the ONNX: {first}")
        config = self._config(builder, data, calibrated=calibrator is not None)
        profile, dynamic = builder.create_optimization_profile(), False
        for i in range(network.num_inputs):
            inp = network.get_input(i)
            shape = list(inp.shape)
            if any(d < 0 for d in shape[1:]):
                raise InputError(f"input {inp.name} has dynamic dims {shape} besides the batch")
            if shape[0] < 0:
                dynamic = True
                profile.set_shape(inp.name, *[[d, *shape[1:]] for d in dims])
            elif dims != (shape[0],) * 3:
                raise InputError(f"input {inp.name} has a fixed batch of {shape[0]}, asked for "
                                 f"{':'.join(map(str, dims))}: export with a dynamic batch dimension")
        if dynamic:
            config.add_optimization_profile(profile)
        if calibrator is not None:
            config.int8_calibrator = calibrator
            if dynamic:  # calibration runs at the calibrator's own batch size
                fixed = builder.create_optimization_profile()
                size = calibrator.get_batch_size()
                for i in range(network.num_inputs):
                    inp = network.get_input(i)
                    s = [size, *list(inp.shape)[1:]]
                    fixed.set_shape(inp.name, s, s, s)
                config.set_calibration_profile(fixed)
        try:
            engine = builder.build_serialized_network(network, config)
        except Exception as e:  # some versions raise instead of returning None
            raise InputError(f"TensorRT engine build failed: {(str(e).splitlines() or ['?'])[0]}") from None
        if engine is None:
            raise InputError(f"TensorRT engine build failed: {(logger.errors or ['no error reported'])[0]}")
        self._save_cache(config)
        return bytes(memoryview(engine))

    def prepare(self, model, batch: int = 1) -> TensorRTRunner:
        trt, torch = self.trt, self.torch
        logger = self._logger()
        engine = trt.Runtime(logger).deserialize_cuda_engine(self.build(model, batch))
        if engine is None:
            raise InputError(f"TensorRT cannot load the engine it built: {(logger.errors or ['?'])[0]}")
        context = engine.create_execution_context()
        dtypes = {getattr(trt.DataType, n): d for n, d in [
            ("FLOAT", torch.float32), ("HALF", torch.float16), ("BF16", torch.bfloat16),
            ("INT8", torch.int8), ("INT32", torch.int32), ("INT64", torch.int64),
            ("BOOL", torch.bool), ("UINT8", torch.uint8)] if hasattr(trt.DataType, n)}
        gen = torch.Generator().manual_seed(self.seed)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        buffers = {}
        for name in inputs:  # inputs first: output shapes follow from them
            shape = [batch if i == 0 and d < 0 else d for i, d in enumerate(engine.get_tensor_shape(name))]
            context.set_input_shape(name, shape)
            dtype = dtypes[engine.get_tensor_dtype(name)]
            x = torch.randn(shape, generator=gen) if dtype.is_floating_point else torch.zeros(shape)
            buffers[name] = x.to(dtype).cuda()
        for name in names:
            if name not in buffers:
                shape = list(context.get_tensor_shape(name))
                buffers[name] = torch.empty(shape, dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
        for name, t in buffers.items():
            context.set_tensor_address(name, t.data_ptr())
        return TensorRTRunner(torch, engine, context, buffers, torch.cuda.Stream())

    def channel_alignment(self) -> int:
        """Tensor-core channel vectors: CHW32 formats for INT8, channel % 8 for FP16/TF32."""
        return 32 if self.precision == "int8" else 8

    def device(self) -> dict:
        torch = self.torch
        props = torch.cuda.get_device_properties(0)
        info = {"device": torch.cuda.get_device_name(0), "runtime": "tensorrt",
                "runtime_version": self.trt.__version__, "precision": self.precision,
                "compute_capability": "%d.%d" % torch.cuda.get_device_capability(0),
                "multiprocessors": props.multi_processor_count, "memory_mb": props.total_memory >> 20,
                "cuda": torch.version.cuda}
        try:  # clocks and driver are optional: pynvml is absent on Jetson
            import pynvml
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            info.update(sm_clock_mhz=pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                        mem_clock_mhz=pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                        driver=str(pynvml.nvmlSystemGetDriverVersion()))
        except Exception:
            pass
        return info
