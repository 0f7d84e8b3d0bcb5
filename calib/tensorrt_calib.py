"""TensorRT 10 implicit-quantization calibrator: IInt8EntropyCalibrator2 with a calibration cache file.

Only for the TensorRT 10.x flags path (JetPack 6 ships 10.3): `BuilderFlag.INT8` + `config.int8_calibrator`
on an FP32 ONNX. TensorRT 11 removed the calibrators (and 10.1 deprecated them): there, and by default
on 10.x as well, INT8 comes from the QDQ ONNX that calib/qdq.py writes (explicit quantization).

Device buffers are torch CUDA tensors (no pycuda, PLATFORM.md). `tensorrt` and `torch` are imported
only when a calibrator is made, so importing this module never needs a GPU.
The cache file is TensorRT's own calibration table; it is keyed (by the caller, see toolchain.build)
by model sha256 + data digest, and written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from graphs.errors import InputError

_INSTALL = "TensorRT is not installed: pip install tensorrt (on Jetson: it ships with JetPack)"


def supports_calibrator(trt) -> bool:
    """True on TensorRT versions that still have implicit-quantization calibrators (< 11)."""
    return int(trt.__version__.split(".")[0]) < 11 and hasattr(trt, "IInt8EntropyCalibrator2")


def make_entropy_calibrator(data: np.ndarray, cache_file: str | os.PathLike, input_name: str = "input",
                            batch_size: int = 32):
    """An IInt8EntropyCalibrator2 over calibration tensors `data` (n,C,H,W), caching to `cache_file`."""
    from toolchain.latency.backends.base import require

    trt = require("tensorrt", _INSTALL)
    torch = require("torch", "the TensorRT calibrator uses torch CUDA tensors: pip install torch")
    if not supports_calibrator(trt):
        raise InputError(f"TensorRT {trt.__version__} has no calibrators (removed in 11): "
                         "use the QDQ ONNX (explicit quantization) for INT8")
    if not torch.cuda.is_available():
        raise InputError("the TensorRT calibrator needs an NVIDIA GPU, and torch sees none")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.data = np.ascontiguousarray(data, dtype=np.float32)
            self.batch = max(1, min(int(batch_size), len(self.data)))
            self.cache_file = Path(cache_file)
            self.name = input_name
            self.index = 0
            self.batches_read = 0
            self.device = torch.empty((self.batch, *self.data.shape[1:]), dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names, *args):
            if self.index + self.batch > len(self.data):  # only full batches: the binding has a fixed size
                return None
            chunk = torch.from_numpy(self.data[self.index:self.index + self.batch])
            self.device.copy_(chunk)
            torch.cuda.synchronize()
            self.index += self.batch
            self.batches_read += 1
            return [int(self.device.data_ptr()) for _ in names]

        def read_calibration_cache(self):
            if self.cache_file.is_file():
                return self.cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
            tmp.write_bytes(bytes(memoryview(cache)))
            os.replace(tmp, self.cache_file)

    return EntropyCalibrator()
