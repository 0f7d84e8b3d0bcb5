"""Does this CPU's int8 path saturate? A QDQ resnet20 with full-range (8-bit) and 7-bit weights, each
run by onnxruntime on the same calibration images and compared with the FP32 model's logits.

On x86 without VNNI, onnxruntime's 8-bit dot products add u8 x s8 pairs into int16 and saturate;
`build --precision int8` then quantizes weights to 7 bits (toolchain.latency.cpu.int8_dot_saturates).

    python bench/int8_saturation.py [--log bench/results/int8_saturation.txt]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from benchlog import logged

from calib.qdq import quantize_qdq
from calib.readers import digest_array, load_calibration
from toolchain.export import export_spec
from toolchain.latency.cpu import cpu_name, int8_dot_saturates

SHAPE = [1, 3, 32, 32]


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--log", default="bench/results/int8_saturation.txt")
    args = p.parse_args()
    with logged("int8_saturation", args.log), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_spec("builtin:resnet20", tmp / "fp32.onnx", SHAPE, num_classes=10)  # seeded random weights
        x = load_calibration("mnist5k", SHAPE, args.images)
        ref = _logits(tmp / "fp32.onnx", x)
        print(f"{cpu_name()}: int8_dot_saturates() = {int8_dot_saturates()}; {args.images} mnist5k images")
        for label, reduce in (("8-bit weights", False), ("7-bit weights", True)):
            out = tmp / f"{label[0]}.onnx"
            quantize_qdq(tmp / "fp32.onnx", out, x, digest_array(x), cache_dir=tmp / "cache", reduce_range=reduce)
            got = _logits(out, x)
            scale = float(np.sum(got * ref) / np.sum(ref * ref))  # least-squares got ~ scale x ref
            err = float(np.abs(got - ref).max() / np.abs(ref).max())
            agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
            print(f"  {label}: logits ~ {scale:.2f} x FP32, max error {err:.1%} of the largest logit, "
                  f"top-1 agreement {agree:.0%}")


if __name__ == "__main__":
    main()
