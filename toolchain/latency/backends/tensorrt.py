"""TensorRT backend through Polygraphy, for TensorRT 10.x (JetPack 6: 10.3) and 11.x.

Loaders are Polygraphy's: NetworkFromOnnxBytes -> CreateConfig -> EngineBytesFromNetwork builds the
engine, EngineFromBytes + TrtRunner run it; the project's timing sits on top (one execute_async_v3
on the runner's stream between two CUDA events). Input buffers are torch CUDA tensors: no pycuda.
It cannot run on the CPU-only project machines and is exercised by the `gpu` tests; it never
returns a number unless a real engine ran.
- Strongly typed networks whenever the ONNX carries the precision (QDQ INT8, FP16 ONNX), and always
  on 11.x (weak typing is deprecated from 10.12 and gone in 11). The 10.x builder flags
  (FP16/INT8 + an INT8 calibrator) are used only for an FP32 ONNX on 10.x.
- Latency tables at --precision int8 time engines built from a QDQ ONNX whose ranges come from
  seeded random inputs: the ranges do not change the kernels, so the timing is the INT8 engine's.
Engines are built on the target (not portable across GPUs or TensorRT versions); the timing cache
is persisted so rebuilding candidate after candidate stays fast.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from graphs.atomic import atomic_file, write_bytes
from graphs.errors import InputError
from toolchain.latency.backends.base import PRECISIONS, Artifact, RunnerBase, require, seeded_inputs
from toolchain.latency.backends.source import EngineSource, OnnxSource, as_source, onnx_at_precision, onnx_traits

_INSTALL = "TensorRT is not installed: pip install tensorrt (on Jetson: it ships with JetPack 6)"
MIN_MAJOR = 10


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def expose_cuda_runtime(torch) -> None:
    """Polygraphy's CUDA wrapper dlopens libcudart found on LD_LIBRARY_PATH or in a CUDA toolkit; torch's
    wheels keep theirs elsewhere (site-packages/nvidia/cu13/lib): point it at the one torch loaded."""
    torch.cuda.init()
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    dirs = sorted({str(Path(line.split()[-1]).parent) for line in maps.splitlines() if "libcudart.so" in line})
    if dirs:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*dirs, os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(
            os.pathsep)


def _default_cache(version: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "compress" / "tensorrt" / f"timing-{version}.cache"


class TensorRTRunner(RunnerBase):
    """Polygraphy's TrtRunner, activated, with the fixed input bound once on the device."""

    def __init__(self, torch, poly_runner, feeds: dict):
        self.torch, self.poly = torch, poly_runner
        self.inputs = {n: (a.shape, a.dtype) for n, a in feeds.items()}
        self.device_feeds = {n: torch.from_numpy(a).cuda() for n, a in feeds.items()}
        self.poly.activate()
        self._bind_fixed()
        self.stream = torch.cuda.ExternalStream(self.poly.stream.ptr)
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def _bind_fixed(self) -> None:
        """One inference on the fixed input sets its shapes and tensor addresses; timed calls re-run it."""
        self.poly.infer(self.device_feeds, copy_outputs_to_host=False)
        self._fixed = True

    def infer(self, feed: dict) -> list[np.ndarray]:
        out = self.poly.infer(feed, copy_outputs_to_host=True)
        self._fixed = False  # the context now holds this feed's shapes (e.g. a validation batch)
        return [np.asarray(v, dtype=np.float32) if np.asarray(v).dtype == np.float16 else np.asarray(v)
                for v in out.values()]

    def _execute(self) -> None:
        if not self._fixed:  # time the input fixed at prepare time (the OPT batch), never the last feed's
            self._bind_fixed()
        if not self.poly.context.execute_async_v3(self.poly.stream.ptr):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def run(self) -> None:
        self._execute()
        self.stream.synchronize()  # the call is over when the GPU is done

    def timed_run(self) -> float:
        """One inference timed on the GPU with CUDA events (ms): excludes Python's own overhead."""
        self._start.record(self.stream)
        self._execute()
        self._end.record(self.stream)
        self._end.synchronize()
        return self._start.elapsed_time(self._end)

    def close(self) -> None:
        if self.poly is not None and self.poly.is_active:
            self.poly.deactivate()
        self.poly = self.device_feeds = None


class TensorRTBackend:
    name = "tensorrt"
    artifact_name = "model.engine"

    def __init__(self, precision: str = "fp32", provider: str | None = None, workspace_mb: int = 1024,
                 timing_cache: str | os.PathLike | None = None, seed: int = 0):
        if provider not in (None, "cuda"):
            raise InputError(f"TensorRT runs on the GPU: --provider {provider} does not apply")
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}: known are {', '.join(PRECISIONS)}")
        self.trt = require("tensorrt", _INSTALL)
        self.major = int(self.trt.__version__.split(".")[0])
        if self.major < MIN_MAJOR:  # 8.5 (JetPack 5) builds implicit-batch networks the parser rejects
            raise InputError(f"TensorRT {self.trt.__version__} is too old: compress needs TensorRT >= 10 "
                             "(JetPack 6); on JetPack 5 use --backend ort")
        require("polygraphy", "TensorRT is driven through Polygraphy: pip install polygraphy")
        self.torch = require("torch", "TensorRT buffers use torch CUDA tensors: pip install torch")
        if not self.torch.cuda.is_available():
            raise InputError("TensorRT needs an NVIDIA GPU, and torch sees none (CUDA unavailable)")
        expose_cuda_runtime(self.torch)
        self.precision, self.workspace = precision, workspace_mb << 20
        self.cache_path = Path(timing_cache) if timing_cache else _default_cache(self.trt.__version__)
        self.seed = seed

    def strongly_typed(self, data: bytes, calibrated: bool = False) -> bool:
        """Types from the graph (11.x always; 10.x for QDQ/FP16 ONNX), or the 10.x builder flags."""
        fp16_onnx, qdq = onnx_traits(data)
        return self.major >= 11 or ((qdq or fp16_onnx) and not calibrated)

    def engine_onnx(self, data: bytes) -> bytes:
        """The ONNX to build at this precision: FP16 ONNX on 11.x (10.x: the FP16 flag), QDQ for INT8."""
        return onnx_at_precision(data, self.precision, convert_fp16=self.major >= 11, tensorrt=True, seed=self.seed)

    def _config(self, data: bytes, profile, strongly_typed: bool, calibrator=None):
        from polygraphy.backend.trt import CreateConfig, Profile

        name, shape, dynamic = profile
        flags = {} if strongly_typed else {"fp16": self.precision in ("fp16", "int8"),
                                          "int8": self.precision == "int8", "calibrator": calibrator}
        # a profile only for a dynamic batch; a static input keeps the network's own shape
        profiles = [Profile().add(name, min=shape[0], opt=shape[1], max=shape[2])] if dynamic else None
        cache = str(self.cache_path) if self.cache_path.is_file() else None
        return CreateConfig(profiles=profiles, memory_pool_limits={self.trt.MemoryPoolType.WORKSPACE: self.workspace},
                            load_timing_cache=cache, **flags)

    def build(self, model, batch: int | tuple[int, int, int] = 1, calibrator=None) -> bytes:
        """ModelSource/ONNX -> serialized engine. `batch`: N, or a MIN:OPT:MAX profile of a dynamic
        batch dim. `calibrator` (10.x only, FP32 ONNX): the implicit INT8 path."""
        from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxBytes
        from polygraphy.exception import PolygraphyException

        dims = (batch,) * 3 if isinstance(batch, int) else tuple(batch)
        if calibrator is not None and self.major >= 11:
            raise InputError(f"TensorRT {self.trt.__version__} has no calibrators: use a QDQ ONNX for INT8")
        source = as_source(model)
        data = self.engine_onnx(source.onnx_bytes()) if calibrator is None else source.onnx_bytes()
        typed = self.strongly_typed(data, calibrated=calibrator is not None)
        chw = source.input_shape()[1:]
        name, fixed = _input_name(data)
        if fixed is not None and dims != (fixed,) * 3:
            raise InputError(f"input {name} has a fixed batch of {fixed}, asked for "
                             f"{':'.join(map(str, dims))}: export with a dynamic batch dimension")
        profile = (name, [[d, *chw] for d in dims], fixed is None)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            network = NetworkFromOnnxBytes(data, strongly_typed=typed)
            config = self._config(data, profile, typed, calibrator)
            # Polygraphy writes the cache in place: give it the temporary file, so a kill never leaves half a cache
            with atomic_file(self.cache_path) as cache_tmp:
                return bytes(EngineBytesFromNetwork(network, config, save_timing_cache=str(cache_tmp))())
        except PolygraphyException as e:
            raise InputError(f"TensorRT engine build failed: {_first_line(e)}") from None

    def load(self, engine: bytes, batch: int) -> TensorRTRunner:
        """A serialized engine -> an active runner bound to a seeded input of batch `batch`."""
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.datatype import DataType
        from polygraphy.exception import PolygraphyException

        try:
            runner = TrtRunner(EngineFromBytes(engine))
            runner.activate()
        except PolygraphyException as e:
            raise InputError(f"TensorRT cannot load the engine: {_first_line(e)}") from None
        specs = {}
        for n, (dtype, shape) in runner.get_input_metadata(use_numpy_dtypes=False).items():
            dims = [batch if j == 0 and (d is None or d < 0) else d for j, d in enumerate(shape)]
            specs[n] = (tuple(dims), np.dtype(DataType.to_dtype(dtype, "numpy")))
        runner.deactivate()
        return TensorRTRunner(self.torch, runner, seeded_inputs(specs, self.seed))

    def prepare(self, model, batch: int = 1) -> TensorRTRunner:
        source = as_source(model)
        engine = getattr(source, "engine", None)  # an artifact built earlier: load it, do not rebuild
        return self.load(engine if engine is not None else self.build(source, batch), batch)

    def artifact(self, onnx_path, profile, calibration, workdir) -> Artifact:
        """A serialized engine built here, on this GPU (engines are not portable), for a MIN:OPT:MAX batch
        profile: fp32/fp16 from the ONNX (FP16 flag on 10.x, FP16 ONNX on 11.x); int8 from the
        TensorRT-flavoured QDQ ONNX (float biases), or on 10.x with int8_mode "calibrator" from
        Polygraphy's entropy calibrator on the FP32 ONNX."""
        onnx_path, workdir = Path(onnx_path), Path(workdir)
        data, done, calibrator = onnx_path.read_bytes(), {}, None
        if self.precision == "int8" and calibration is None:
            raise InputError("int8 needs --calib DATA (a DATA spec, .npy/.npz file or folder)")
        if self.precision == "int8" and calibration.int8_mode == "calibrator":
            calibrator, done = self._calibrator(data, calibration, profile, workdir)
        elif self.precision == "int8":
            from calib.qdq import quantize_qdq

            done = quantize_qdq(onnx_path, workdir / "qdq.onnx", calibration.data, calibration.digest,
                                input_name=calibration.input_name, method=calibration.method,
                                cache_dir=calibration.cache_dir, for_tensorrt=True)
            data = (workdir / "qdq.onnx").read_bytes()
        source = OnnxSource(data)
        engine = self.build(source, profile, calibrator)
        if calibrator is not None:
            done["calibrated"] = calibrator.num_batches > 0
            self._keep_calibration_cache(workdir / "calib.cache", Path(done["cache_file"]))
        typed = self.strongly_typed(self.engine_onnx(data), calibrated=calibrator is not None)
        info = {"name": "tensorrt", "runtime": "tensorrt", "version": self.trt.__version__, "major": self.major,
                "mode": "strongly typed" if typed else "builder flags", "workspace_mb": self.workspace >> 20,
                "timing_cache": str(self.cache_path), "loader": "polygraphy"}
        if self.precision == "int8":
            info["int8_mode"] = calibration.int8_mode
        return Artifact(engine, "tensorrt-engine", info, EngineSource(engine, source.input_shape()), done)

    def _calibrator(self, data: bytes, calibration, profile, workdir: Path):
        """Polygraphy's entropy calibrator, its cache keyed by model, data and TensorRT version."""
        import hashlib
        import shutil

        from calib.qdq import default_cache_dir
        from calib.tensorrt_calib import make_entropy_calibrator

        if self.major >= 11:
            raise InputError(f"TensorRT {self.trt.__version__} has no calibrators (removed in 11): "
                             "use the default QDQ INT8")
        key = hashlib.sha256(f"{hashlib.sha256(data).hexdigest()}|{calibration.digest}|trt-entropy2|"
                             f"{self.trt.__version__}".encode()).hexdigest()
        cache = Path(calibration.cache_dir or default_cache_dir()) / f"trt-{key}.cache"
        work = workdir / "calib.cache"  # written by the build, kept only when the build succeeds
        if cache.is_file():
            shutil.copyfile(cache, work)
        # Polygraphy calibrates at the OPT shape: every batch holds exactly the OPT batch
        calibrator = make_entropy_calibrator(calibration.data, work, calibration.input_name, batch_size=profile[1])
        return calibrator, {"method": "entropy (IInt8EntropyCalibrator2)", "format": "tensorrt-calibrator",
                            "cache_file": str(cache), "cache_hit": cache.is_file()}

    @staticmethod
    def _keep_calibration_cache(work: Path, cache: Path) -> None:
        if work.is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(cache, work.read_bytes())  # atomic: a concurrent build never reads half a table

    def channel_alignment(self) -> int:
        """Tensor-core channel vectors: CHW32 formats for INT8, channel % 8 for FP16/TF32."""
        return 32 if self.precision == "int8" else 8

    def device(self) -> dict:
        torch = self.torch
        props = torch.cuda.get_device_properties(0)
        return {"device": torch.cuda.get_device_name(0), "runtime": "tensorrt",
                "runtime_version": self.trt.__version__, "precision": self.precision,
                "compute_capability": "%d.%d" % torch.cuda.get_device_capability(0),
                "multiprocessors": props.multi_processor_count, "memory_mb": props.total_memory >> 20,
                "cuda": torch.version.cuda}


def _input_name(data: bytes) -> tuple[str, int | None]:
    """(the single input's name, its fixed batch size or None when the batch dim is dynamic)."""
    import onnx

    m = onnx.load_from_string(data)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"the TensorRT backend builds single-input models, this one has {len(inputs)}")
    d0 = inputs[0].type.tensor_type.shape.dim[0]
    return inputs[0].name, d0.dim_value if d0.HasField("dim_value") else None
