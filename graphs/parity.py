"""Running an ONNX model on onnxruntime, and the parity rule the whole product is judged by."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

# Outputs this small or large mean the activations are degenerate (random weights, no BN
# calibration): no tolerance is meaningful there.
SCALE_RANGE = (1e-3, 1e4)


def run_onnx(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


@dataclass
class Parity:
    max_diff: float
    scale: float  # max |reference output|
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_diff)) and self.max_diff <= self.tolerance

    @property
    def degenerate(self) -> bool:
        return not SCALE_RANGE[0] <= self.scale <= SCALE_RANGE[1]


def parity(reference: list[np.ndarray], candidate: list[np.ndarray], rel: float = 1e-4) -> Parity:
    """Each output i must satisfy max |a_i - b_i| <= rel * max(1, max |a_i|) (DESIGN.md, per output: a
    detector's pixel-scale boxes must not lend their tolerance to its scores). Reports the output
    closest to failing (its diff and tolerance) and the largest output scale (for the degenerate test)."""
    scales = [float(np.max(np.abs(a))) if a.size else 0.0 for a in reference]
    scale = max(scales, default=0.0)
    if not reference:
        return Parity(0.0 if not candidate else float("inf"), 0.0, rel)
    if len(reference) != len(candidate) or any(a.shape != b.shape for a, b in zip(reference, candidate)):
        return Parity(float("inf"), scale, rel * max(1.0, scale))
    diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
             for a, b in zip(reference, candidate)]
    tolerances = [rel * max(1.0, s) for s in scales]
    worst = max(range(len(diffs)), key=lambda i: diffs[i] / tolerances[i] if np.isfinite(diffs[i]) else np.inf)
    return Parity(diffs[worst], scale, tolerances[worst])
