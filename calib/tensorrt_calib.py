"""TensorRT 10 implicit-quantization calibration through Polygraphy's `Calibrator` (IInt8EntropyCalibrator2).

Only for the TensorRT 10.x flags path (JetPack 6 ships 10.3): BuilderFlag.INT8 + a calibrator on an
FP32 ONNX. TensorRT 11 removed the calibrators (10.1 deprecated them): there, and by default on 10.x
as well, INT8 comes from the QDQ ONNX that calib/qdq.py writes (explicit quantization).

Polygraphy's CreateConfig calibrates at the last optimization profile's OPT shape, so every batch
holds exactly `batch_size` samples (the OPT batch). `tensorrt` is imported only when a calibrator is
made, so importing this module never needs a GPU. The cache file is TensorRT's own calibration table,
keyed by the caller (toolchain.build: model sha256 + data digest + TensorRT version).
"""
from __future__ import annotations

import os

import numpy as np

from graphs.errors import InputError

_INSTALL = "TensorRT is not installed: pip install tensorrt (on Jetson: it ships with JetPack 6)"


def supports_calibrator(trt) -> bool:
    """True on TensorRT versions that still have implicit-quantization calibrators (< 11)."""
    return int(trt.__version__.split(".")[0]) < 11 and hasattr(trt, "IInt8EntropyCalibrator2")


class CalibrationBatches:
    """Re-iterable feeds {input_name: (batch_size, C, H, W) float32} over the calibration tensors."""

    def __init__(self, data: np.ndarray, input_name: str, batch_size: int):
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.name, self.batch = input_name, max(1, min(int(batch_size), len(self.data)))

    def __iter__(self):
        for i in range(0, len(self.data) - self.batch + 1, self.batch):  # full batches only: fixed shape
            yield {self.name: self.data[i:i + self.batch]}

    def __len__(self) -> int:
        return len(self.data) // self.batch


def make_entropy_calibrator(data: np.ndarray, cache_file: str | os.PathLike, input_name: str = "input",
                            batch_size: int = 32):
    """Polygraphy's Calibrator over `data` (n,C,H,W) as an IInt8EntropyCalibrator2, caching to `cache_file`.

    After the engine build, `calibrator.num_batches` says how many batches TensorRT read (0: the
    ranges came from the cache)."""
    from toolchain.latency.backends.base import require

    trt = require("tensorrt", _INSTALL)
    if not supports_calibrator(trt):
        raise InputError(f"TensorRT {trt.__version__} has no calibrators (removed in 11): "
                         "use the QDQ ONNX (explicit quantization) for INT8")
    require("polygraphy", "TensorRT calibration goes through Polygraphy: pip install polygraphy")
    torch = require("torch", "TensorRT calibration needs torch's CUDA runtime: pip install torch")
    if not torch.cuda.is_available():
        raise InputError("the TensorRT calibrator needs an NVIDIA GPU, and torch sees none")
    from polygraphy.backend.trt import Calibrator

    from toolchain.latency.backends.tensorrt import expose_cuda_runtime

    expose_cuda_runtime(torch)  # Polygraphy copies the batches to the GPU with its own CUDA wrapper

    return Calibrator(CalibrationBatches(data, input_name, batch_size), cache=str(cache_file),
                      BaseClass=trt.IInt8EntropyCalibrator2)
