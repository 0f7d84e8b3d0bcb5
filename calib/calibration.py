"""What an INT8 build is calibrated on: the exact tensors, their digest, the method and where caches live."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT8_MODES = ("qdq", "calibrator")


@dataclass
class Calibration:
    data: np.ndarray          # (n, C, H, W) float32, calib.readers.load_calibration
    digest: str               # calib.readers.digest_array(data): the key caches are stored under
    spec: str                 # the --calib string the user gave
    method: str               # minmax | entropy | percentile (QDQ); the calibrator path is entropy
    input_name: str
    cache_dir: str | None = None
    int8_mode: str = "qdq"    # "calibrator": TensorRT 10.x IInt8EntropyCalibrator2 on the FP32 ONNX

    def record(self) -> dict:
        """The manifest's calibration entry (backends add what they did: format, cache use)."""
        return {"data": self.spec, "digest": self.digest, "count": int(len(self.data)), "method": self.method}
