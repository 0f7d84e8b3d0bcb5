"""Static INT8 quantization to QDQ with onnxruntime.quantization, with a reusable calibration cache.

The output is the portable INT8 form: QuantizeLinear/DequantizeLinear pairs, symmetric activations
and weights (int8, zero-point 0), per-channel weights. onnxruntime runs it on the CPU, and TensorRT
10 and 11 both build INT8 engines from it (explicit quantization, no calibrator needed). For
TensorRT (`for_tensorrt=True`) biases stay float: a quantized bias is an INT32 DequantizeLinear that
TensorRT's ONNX parser rejects (onnx-tensorrt #850, onnxruntime #17738); TensorRT fuses the float
bias into the INT8 convolution itself.

`quant_pre_process` runs first (symbolic shape inference + onnxruntime's basic graph optimisations,
which fold BatchNorm into Conv): quantizing the folded weights is what every runtime then executes;
quantizing the unfolded conv and leaving BN in float would cost accuracy and block the int8 conv fusion.

Calibration cache: the tensor ranges the calibrator computes are JSON (onnxruntime's
`save_tensors_data` format), stored under CACHE_DIR/<key>.json with key = sha256 of (model sha256,
calibration data digest, method, options, onnxruntime version). A second build with the same model,
data and method loads the ranges and passes no data reader at all: calibration does not run.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from graphs.atomic import write_bytes
from graphs.errors import InputError
from graphs.onnx_io import MAX_IR_VERSION, cap_ir_version

METHODS = ("minmax", "entropy", "percentile")
CACHE_VERSION = 1
ENTROPY_BINS = 512


def default_cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "compress" / "calib"


def _method(ort_q, method: str):
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}: known are {', '.join(METHODS)}")
    return {"minmax": ort_q.CalibrationMethod.MinMax, "entropy": ort_q.CalibrationMethod.Entropy,
            "percentile": ort_q.CalibrationMethod.Percentile}[method]


def cache_key(model_sha256: str, data_digest: str, method: str) -> str:
    import onnxruntime

    ident = {"model": model_sha256, "data": data_digest, "method": method, "symmetric": True,
             "per_channel": True, "entropy_bins": ENTROPY_BINS, "ort": onnxruntime.__version__, "v": CACHE_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _fix_ir(path: Path) -> None:
    """onnx 1.23 may write IR 14; onnxruntime 1.31 reads at most 13 (PLATFORM.md)."""
    import onnx

    m = onnx.load(str(path))
    if m.ir_version > MAX_IR_VERSION:
        onnx.save(cap_ir_version(m), str(path))


def preprocess(src: Path, dst: Path) -> bool:
    """quant_pre_process(src) -> dst; False (dst = a copy of src) when it cannot run on this model."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        _fix_ir(dst)
        return True
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantization works without
        dst.write_bytes(src.read_bytes())
        return False


def _calibrate(ort_q, model: Path, reader, method: str, calib_method, cache_file: Path, tmp: Path) -> None:
    """Run the calibrator over `reader` and store its tensor ranges (JSON) in `cache_file`.

    Called directly (not through quantize_static) because quantize_static does not pass histogram
    sizes on: its entropy calibrator then uses 128 bins for 128 quantized levels, where the only
    threshold candidate is the full range, i.e. minmax. Here entropy uses ENTROPY_BINS bins for 128
    levels (TensorRT's IInt8EntropyCalibrator2 uses 2048, but onnxruntime's threshold search is
    Python and ~quadratic in bins: 2048 took 165 s on resnet20 here, 512 takes seconds) and
    percentile 2048 bins at 99.999%.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    opts = {"symmetric": True}
    if method == "entropy":
        opts.update(num_bins=ENTROPY_BINS, num_quantized_bins=128)
    elif method == "percentile":
        opts.update(num_bins=2048, percentile=99.999)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print progress
            cal = create_calibrator(model, None, augmented_model_path=str(tmp / "augmented.onnx"),
                                    calibrate_method=calib_method, extra_options=opts)
            cal.collect_data(reader)
            ranges = cal.compute_data()
    except Exception as e:  # noqa: BLE001 - e.g. the data does not fit the model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"INT8 calibration failed: {first}") from None
    save_tensors_data(ranges, cache_file)  # atomic (temp file + os.replace)


def _cache_file(model_sha: str, data_digest: str, method: str, cache_dir) -> Path:
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"calibration cache dir {cache_dir}: cannot create it ({exc.strerror})") from None
    return cache_dir / f"{cache_key(model_sha, data_digest, method)}.json"


def _cache_usable(cache_file: Path) -> bool:
    """True when the cache holds readable ranges; a corrupt cache is deleted and recomputed, never trusted."""
    if not cache_file.is_file():
        return False
    try:
        json.loads(cache_file.read_text())
        return True
    except (OSError, ValueError):
        cache_file.unlink(missing_ok=True)
        return False


def _quantize_static(ort_q, pre: Path, q: Path, calib_method, extra: dict, cache_file: Path, reduce_range: bool) -> None:
    try:  # ranges come from the cache file only: quantize_static gets no data reader
        with contextlib.redirect_stdout(io.StringIO()):
            ort_q.quantize_static(
                str(pre), str(q), None, quant_format=ort_q.QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                activation_type=ort_q.QuantType.QInt8, weight_type=ort_q.QuantType.QInt8,
                calibrate_method=calib_method, extra_options=extra, calibration_cache_path=str(cache_file))
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"INT8 quantization failed: {first}") from None


def quantize_qdq(model: str | os.PathLike, out: str | os.PathLike, data: np.ndarray, data_digest: str, *,
                 input_name: str = "input", method: str = "minmax", cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 32, pre_process: bool = True, for_tensorrt: bool = False,
                 reduce_range: bool = False) -> dict:
    """Quantize ONNX `model` to a QDQ ONNX at `out` (written atomically); returns what was done.

    `data` are the calibration tensors (n,C,H,W) and `data_digest` their digest
    (calib.readers.digest_array). The returned dict says whether the calibration cache was hit
    (`calibrated` False: no calibration ran, the ranges came from `cache_file`). `reduce_range` quantizes
    weights to 7 bits, for x86 CPUs without VNNI, whose int8 dot products saturate at full range
    (toolchain.latency.cpu.int8_dot_saturates).
    """
    import onnxruntime.quantization as ort_q

    from calib.readers import ArrayReader

    calib_method = _method(ort_q, method)
    src = Path(model)
    cache_file = _cache_file(hashlib.sha256(src.read_bytes()).hexdigest(), data_digest, method, cache_dir)
    hit = _cache_usable(cache_file)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reader = None if hit else ArrayReader(data, input_name, batch_size)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": not for_tensorrt}
    with tempfile.TemporaryDirectory(prefix=".qdq.", dir=out.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        if pre_process:
            did_pre = preprocess(src, pre)
        else:
            pre.write_bytes(src.read_bytes())
            did_pre = False
        if not hit:
            _calibrate(ort_q, pre, reader, method, calib_method, cache_file, Path(tmp))
        q = Path(tmp) / "q.onnx"
        _quantize_static(ort_q, pre, q, calib_method, extra, cache_file, reduce_range)
        _fix_ir(q)
        write_bytes(out, q.read_bytes())
    weights = "int8 symmetric per-channel (zero-point 0)" + (
        ", 7-bit range: this CPU's int8 dot products saturate" if reduce_range else "")
    return {"method": method, "format": "QDQ", "activations": "int8 symmetric (zero-point 0)",
            "weights": weights, "preprocessed": did_pre,
            "cache_file": str(cache_file), "cache_hit": hit, "calibrated": not hit,
            "bias": "float (TensorRT)" if for_tensorrt else "int32",
            "batches_read": 0 if reader is None else reader.batches_read, "samples": int(len(data))}


def quantize_for_timing(model: bytes, seed: int = 0, samples: int = 8, for_tensorrt: bool = False) -> bytes:
    """A QDQ ONNX whose ranges come from seeded random inputs: for latency tables at INT8, where the
    ranges do not change which kernels run. Never for accuracy (build calibrates on real data)."""
    import onnx

    from calib.readers import digest_array

    m = onnx.load_from_string(model)
    inits = {i.name for i in m.graph.initializer}
    inp = [i for i in m.graph.input if i.name not in inits][0]
    meta = {p.key: p.value for p in m.metadata_props}.get("compress.input_shape", "")
    dims = [int(v) for v in meta.split(",") if v.strip()] or \
        [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    fixed = inp.type.tensor_type.shape.dim[0].HasField("dim_value")
    x = np.random.default_rng(seed).standard_normal((dims[0] if fixed else samples, *dims[1:])).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix=".qdq-timing.") as tmp:
        src, dst = Path(tmp) / "m.onnx", Path(tmp) / "q.onnx"
        src.write_bytes(model)
        quantize_qdq(src, dst, x, digest_array(x), input_name=inp.name, cache_dir=Path(tmp) / "cache",
                     batch_size=len(x), for_tensorrt=for_tensorrt)
        return dst.read_bytes()
