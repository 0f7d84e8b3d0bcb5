"""FP32 ONNX -> FP16 ONNX (float32 inputs and outputs kept): ORT's FP16 artifact, TensorRT 11's FP16 input."""
from __future__ import annotations

from graphs.errors import InputError
from graphs.onnx_io import cap_ir_version


def to_fp16_bytes(model: bytes) -> bytes:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        half = convert_float_to_float16(onnx.load_from_string(model), keep_io_types=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"FP16 conversion failed: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    return cap_ir_version(half).SerializeToString()
