"""`compress build`: a pruned model -> a deployable artifact (ORT model or TensorRT engine) + manifest.

    build(source, backend, precision, out, calib=None, batch="1:1:1", calib_method="minmax",
          max_drop=None, val=None, **options) -> manifest dict

source     a `compress prune` output DIR (DIR/model.onnx, input shape from DIR/plan.json) or an .onnx
backend    "ort": fp32 = the graph-optimised model (ORT_ENABLE_EXTENDED: fusions that stay portable,
                  no CPU-specific layouts), fp16 = FP16 ONNX (float32 inputs/outputs kept),
                  int8 = QDQ ONNX (calib/qdq.py: static, symmetric, per-channel weights);
           "tensorrt": a serialized engine, built here, on this GPU (engines are not portable):
                  10.x flags path (FP16/INT8 builder flags; INT8 from the QDQ ONNX, or the entropy
                  calibrator with int8_mode="calibrator"), 11.x strongly typed (FP16 = the FP16 ONNX,
                  INT8 = the QDQ ONNX). Dynamic batch profile MIN:OPT:MAX, timing cache reused,
                  workspace limit.
out        the artifact file; its manifest is OUT.manifest.json beside it (e.g. r20.int8.onnx ->
           r20.int8.onnx.manifest.json). When OUT is an existing directory or ends with "/", the
           artifact is OUT/model.onnx (ort) or OUT/model.engine (tensorrt) and the manifest
           OUT/manifest.json.

The manifest records backend + version, device, precision, inputs and batch profile, sha256 of the
source ONNX and of the artifact, calibration digest + method + cache use, latency measured here
(median ms at OPT batch; for fp16/int8 also the ratio to FP32, interleaved run by run), and the
accuracy check: top-1 of FP32 and of the artifact on a validation set plus output cosine similarity.
`max_drop` (top-1 points) fails the build with BuildCheckFailed (CLI exit 1) when exceeded.

Everything is written to temporary files and renamed at the end (artifact, then manifest): a failed
build - bad input, engine build failure, failed check - leaves neither.
Bad input raises graphs.errors.InputError (CLI exit 2, one line).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from graphs.errors import InputError

BACKENDS = ("ort", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_VERSION = 1
DEFAULT_VAL_COUNT = 1000


class BuildCheckFailed(Exception):
    """The artifact built but failed the accuracy check (CLI exit 1); nothing was written."""

    def __init__(self, message: str, manifest: dict):
        super().__init__(message)
        self.manifest = manifest


# ------------------------------------------------------------------------------------------ inputs
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_batch(batch) -> tuple[int, int, int]:
    """'MIN:OPT:MAX' (or a single 'N') -> (min, opt, max), 1 <= min <= opt <= max."""
    text = str(batch).strip()
    parts = text.split(":")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--batch must be MIN:OPT:MAX (or N) integers like 1:8:32, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not (1 <= vals[0] <= vals[1] <= vals[2]):
        raise InputError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {text!r}")
    return tuple(vals)


def resolve_source(source: str) -> tuple[Path, list[int], dict]:
    """(ONNX path, input shape [N,C,H,W], the plan's model record or {})."""
    import onnx

    p = Path(str(source)).expanduser()
    plan_model: dict = {}
    if p.is_dir():
        onnx_path = p / "model.onnx"
        if not onnx_path.is_file():
            raise InputError(f"{source}: no model.onnx (is it a `compress prune` output directory?)")
        plan_file = p / "plan.json"
        if plan_file.is_file():
            try:
                plan_model = dict(json.loads(plan_file.read_text()).get("model") or {})
            except (ValueError, AttributeError):
                raise InputError(f"{plan_file}: not a valid plan (JSON)") from None
    elif p.is_file():
        if p.suffix.lower() != ".onnx":
            raise InputError(f"{source}: expected a `compress prune` directory or an .onnx file")
        onnx_path = p
    else:
        raise InputError(f"{source}: no such directory or .onnx file")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{onnx_path}: not a readable ONNX model ({type(e).__name__})") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"{onnx_path}: build supports single-input models, this one has {len(inputs)} inputs")
    shape = plan_model.get("input_shape")
    if not shape:
        meta = {m.key: m.value for m in model.metadata_props}.get("compress.input_shape", "")
        shape = [int(v) for v in meta.split(",") if v.strip()] or None
    if not shape:
        dims = inputs[0].type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else 0) for i, d in enumerate(dims)]
    shape = [int(d) for d in shape]
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise InputError(f"{onnx_path}: input shape {shape} is not a fixed (N,C,H,W); export with a fixed shape")
    return onnx_path, shape, plan_model


def _layout(out: str, backend: str) -> tuple[Path, Path]:
    text = str(out)
    p = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or p.is_dir():
        return p / ("model.engine" if backend == "tensorrt" else "model.onnx"), p / "manifest.json"
    return p, p.with_name(p.name + ".manifest.json")


def _input_info(onnx_path: Path) -> tuple[str, bool]:
    """(input name, batch dim is dynamic)."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inp = [i for i in m.graph.input if i.name not in inits][0]
    d0 = inp.type.tensor_type.shape.dim[0]
    return inp.name, not d0.HasField("dim_value")


# ------------------------------------------------------------------------------------- conversions
def _save_onnx(model, path: Path) -> None:
    import onnx

    if model.ir_version > 10:  # onnxruntime 1.31 reads at most IR 13 (PLATFORM.md); 10 is safe
        model.ir_version = 10
    onnx.save(model, str(path))


def ort_optimize(src: Path, dst: Path) -> None:
    """FP32: onnxruntime's extended graph optimisations (Conv+BN, Conv+Relu fusions...) saved to dst."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise InputError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from None


def to_fp16(src: Path, dst: Path) -> None:
    """FP32 ONNX -> FP16 ONNX with float32 inputs/outputs (keep_io_types)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        half = convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"FP16 conversion failed: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    _save_onnx(half, dst)


# ----------------------------------------------------------------------------------------- TensorRT
def _trt_backend(precision: str, workspace_mb: int, timing_cache):
    from toolchain.latency.backends import get_backend

    return get_backend("tensorrt", precision=precision, workspace_mb=workspace_mb, timing_cache=timing_cache)


def build_engine(be, onnx_path: Path, precision: str, batch: tuple[int, int, int], calibrator=None) -> bytes:
    """Serialized engine from ONNX with a MIN:OPT:MAX batch profile (the backend's builder, which
    handles TensorRT 10.x flags and 11.x strong typing). `be` was created for `precision`."""
    if be.precision != precision:
        raise ValueError(f"backend built for {be.precision}, asked for {precision}")
    return be.build(onnx_path, batch, calibrator)


# ------------------------------------------------------------------------------------------- checks
def _infer_fn(runner, input_name: str):
    """runner.infer as x -> first output (float32), for the accuracy check."""
    return lambda x: np.asarray(runner.infer({input_name: x})[0], dtype=np.float32)


def _val_data(val: str, input_shape, count: int, batch: int):
    from toolchain.data import make_loader

    loader = make_loader(val, input_shape, "val", batch_size=batch, seed=0, shuffle=False)
    n = 0
    for x, y in loader:
        x, y = x.numpy()[: count - n], y.numpy()[: count - n]
        n += len(x)
        yield x, y
        if n >= count:
            return


def accuracy_check(ref_fn, art_fn, val: str, input_shape, count: int, batch: int, pad: bool = False) -> dict:
    """Top-1 of FP32 (ref_fn) and of the artifact (art_fn) on `val`'s val split; output cosine.

    pad: the model has a fixed batch, so a short last batch is zero-padded and the padding dropped.
    """
    right_ref = right_art = agree = n = 0
    cos = []
    for x, y in _val_data(val, input_shape, count, batch):
        k = len(x)
        if pad and k < batch:
            x = np.concatenate([x, np.zeros((batch - k, *x.shape[1:]), x.dtype)])
        a, b = ref_fn(x)[:k].reshape(k, -1), art_fn(x)[:k].reshape(k, -1)
        x = x[:k]
        pa, pb = a.argmax(1), b.argmax(1)
        right_ref += int((pa == y).sum())
        right_art += int((pb == y).sum())
        agree += int((pa == pb).sum())
        num = (a.astype(np.float64) * b).sum(1)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos.extend((num / np.maximum(den, 1e-30)).tolist())
        n += len(x)
    if n == 0:
        raise InputError(f"validation data {val!r} has an empty val split")
    t_ref, t_art = 100.0 * right_ref / n, 100.0 * right_art / n
    return {"val": val, "split": "val", "samples": n, "top1_fp32": round(t_ref, 3), "top1": round(t_art, 3),
            "top1_drop_points": round(t_ref - t_art, 3), "top1_agreement": round(100.0 * agree / n, 3),
            "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos))}


def _latency(candidate, reference, precision: str, runs: int | None) -> dict:
    from toolchain.latency.measure import interleaved_ratio, time_runner

    if precision == "fp32" or reference is None:
        kw = {} if runs is None else {"runs": runs}
        st = time_runner(candidate, **kw)
        return {"median_ms": st.median, "p90_ms": st.p90, "cv": st.cv, "runs": st.count,
                "protocol": "time_runner (10 warm-up)"}
    kw = {} if runs is None else {"runs": runs, "target_se": None, "warmup": 3}
    r = interleaved_ratio(candidate, reference, **kw)
    return {"median_ms": r.candidate.median, "fp32_median_ms": r.reference.median, "ratio_to_fp32": r.ratio,
            "ratio_se": r.ratio_se, "runs": r.candidate.count,
            "protocol": "interleaved with the FP32 model, median of per-pair ratios"}


# -------------------------------------------------------------------------------------------- build
def build(source: str, backend: str, precision: str, out: str, calib: str | None = None,
          batch: str = "1:1:1", calib_method: str = "minmax", max_drop: float | None = None,
          val: str | None = None, *, cache_dir: str | None = None, calib_count: int = 256,
          val_count: int = DEFAULT_VAL_COUNT, workspace_mb: int = 1024, timing_cache: str | None = None,
          latency_runs: int | None = None, measure: bool = True, int8_mode: str = "qdq") -> dict:
    """Build a deployable artifact from `source`; returns the manifest (also written beside it).

    Keyword options: cache_dir (calibration cache, default ~/.cache/compress/calib), calib_count
    (calibration samples), val_count (validation samples), workspace_mb / timing_cache (TensorRT),
    latency_runs (None: the measurement protocol's defaults), measure (False: no latency),
    int8_mode ("qdq" on every TensorRT; "calibrator": TensorRT 10.x IInt8EntropyCalibrator2).
    Raises InputError on bad input or a failed engine build, BuildCheckFailed when the top-1 drop
    exceeds max_drop; in both cases nothing is written.
    """
    from calib.readers import load_calibration, digest_array, resolve

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}: build supports {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: fp32, fp16 or int8")
    if int8_mode not in ("qdq", "calibrator"):
        raise InputError(f"unknown int8 mode {int8_mode!r}: qdq or calibrator")
    if max_drop is not None and (not isinstance(max_drop, (int, float)) or max_drop < 0):
        raise InputError(f"--max-drop must be a non-negative number of top-1 points, got {max_drop!r}")
    profile = parse_batch(batch)
    onnx_path, input_shape, plan_model = resolve_source(source)
    input_name, dynamic = _input_info(onnx_path)
    if not dynamic and profile != (input_shape[0],) * 3:
        raise InputError(f"{onnx_path}: the batch dimension is fixed at {input_shape[0]}, asked for "
                         f"{':'.join(map(str, profile))}: export with a dynamic batch dimension")
    if precision == "int8" and not calib:
        raise InputError("int8 needs --calib DATA (a DATA spec, .npy/.npz file or folder)")
    if val is None and calib:
        kind, what = resolve(calib)
        val = what if kind == "spec" else None
    if max_drop is not None and not val:
        raise InputError("--max-drop needs labelled validation data: pass --val DATA")
    artifact, manifest_path = _layout(out, backend)
    if manifest_path.resolve() == artifact.resolve():
        raise InputError(f"{out}: artifact and manifest would be the same file")

    be = None
    if backend == "tensorrt":  # fail fast, before any work, when TensorRT or the GPU is missing
        be = _trt_backend(precision, workspace_mb, timing_cache)
        if int8_mode == "calibrator" and precision == "int8" and be.major >= 11:
            raise InputError(f"TensorRT {be.trt.__version__} has no calibrators (removed in 11): "
                             "use the default QDQ INT8")

    calibration = None
    data = None
    if precision == "int8" and calib:
        data = load_calibration(calib, input_shape, calib_count)  # wrong shapes -> InputError
        calibration = {"data": calib, "digest": digest_array(data), "count": int(len(data)),
                       "method": calib_method}

    try:
        artifact.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot write there ({e.strerror})") from None
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{artifact.name}.",
                                                                   dir=artifact.parent)))
        # 1. the ONNX the runtime consumes (the ORT artifact itself, or TensorRT's input)
        stage = tmp / "stage.onnx"
        if precision == "fp32":
            if backend == "ort":
                ort_optimize(onnx_path, stage)
            else:
                stage = onnx_path
        elif precision == "fp16":
            if backend == "ort" or be.major >= 11:
                to_fp16(onnx_path, stage)
            else:
                stage = onnx_path  # 10.x: FP16 builder flag on the FP32 ONNX
        elif backend == "tensorrt" and int8_mode == "calibrator":
            stage = onnx_path
        else:
            from calib.qdq import quantize_qdq

            info = quantize_qdq(onnx_path, stage, data, calibration["digest"], input_name=input_name,
                                method=calib_method, cache_dir=cache_dir)
            calibration.update({k: info[k] for k in ("format", "activations", "weights", "preprocessed",
                                                      "cache_file", "cache_hit", "calibrated")})

        # 2. the artifact
        art_tmp = tmp / "artifact"
        from toolchain.latency.backends import get_backend

        ref_runner = stack.enter_context(get_backend("ort").prepare(onnx_path, profile[1]))
        ref_fn = _infer_fn(ref_runner, input_name)
        candidate = reference = None
        if backend == "ort":
            if stage.parent == tmp:
                os.replace(stage, art_tmp)
            else:
                art_tmp.write_bytes(stage.read_bytes())
            ob = get_backend("ort")
            device, backend_info = ob.device(), {"name": "ort", "runtime": "onnxruntime",
                                                  "version": ob.device()["runtime_version"],
                                                  "provider": "CPUExecutionProvider"}
            candidate = stack.enter_context(ob.prepare(art_tmp.read_bytes(), profile[1]))
            art_fn = _infer_fn(candidate, input_name)
            if measure:
                reference = ref_runner if precision != "fp32" else None
        else:
            calibrator = None
            if precision == "int8" and int8_mode == "calibrator":
                from calib.tensorrt_calib import make_entropy_calibrator

                key = hashlib.sha256(f"{_sha256_file(onnx_path)}|{calibration['digest']}|trt-entropy2|"
                                     f"{be.trt.__version__}".encode()).hexdigest()
                from calib.qdq import default_cache_dir

                cfile = Path(cache_dir or default_cache_dir()) / f"trt-{key}.cache"
                hit = cfile.is_file()
                calibrator = make_entropy_calibrator(data, cfile, input_name, batch_size=min(32, profile[2]))
                calibration.update({"method": "entropy (IInt8EntropyCalibrator2)", "format": "tensorrt-calibrator",
                                    "cache_file": str(cfile), "cache_hit": hit})
            engine = build_engine(be, stage, precision, profile, calibrator)
            if calibrator is not None:
                calibration["calibrated"] = calibrator.batches_read > 0
            art_tmp.write_bytes(engine)
            device = be.device()
            backend_info = {"name": "tensorrt", "runtime": "tensorrt", "version": be.trt.__version__,
                            "major": be.major,
                            "mode": "strongly typed" if be.major >= 11 else "builder flags",
                            "workspace_mb": be.workspace >> 20, "timing_cache": str(be.cache_path)}
            if precision == "int8":
                backend_info["int8_mode"] = int8_mode
            candidate = stack.enter_context(be.load(engine, profile[1]))
            art_fn = _infer_fn(candidate, input_name)
            if measure and precision != "fp32":
                ref_be = _trt_backend("fp32", workspace_mb, timing_cache)
                reference = stack.enter_context(ref_be.load(build_engine(ref_be, onnx_path, "fp32", profile),
                                                            profile[1]))

        # 3. checks, then the manifest
        accuracy = None
        if val:
            # any batch for ORT (dynamic batch); within the engine's profile for TensorRT
            if not dynamic:
                eval_batch = input_shape[0]
            else:
                eval_batch = 64 if backend == "ort" else max(1, min(64, profile[2]))
            accuracy = accuracy_check(ref_fn, art_fn, val, input_shape, val_count, batch=eval_batch,
                                      pad=not dynamic)
        latency = None
        if measure:
            latency = {"batch": profile[1], **_latency(candidate, reference, precision, latency_runs)}
        manifest = {
            "version": MANIFEST_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "artifact": {"file": artifact.name, "format": "tensorrt-engine" if backend == "tensorrt" else "onnx",
                         "sha256": _sha256_file(art_tmp), "bytes": art_tmp.stat().st_size},
            "source": {"onnx": str(onnx_path), "onnx_sha256": _sha256_file(onnx_path),
                       "spec": plan_model.get("spec"), "unpruned_onnx_sha256": plan_model.get("onnx_sha256")},
            "backend": backend_info,
            "device": device,
            "precision": precision,
            "inputs": [{"name": input_name, "shape": [-1 if dynamic else input_shape[0], *input_shape[1:]],
                        "dtype": "float32"}],
            "batch": {"min": profile[0], "opt": profile[1], "max": profile[2]},
            "calibration": calibration,
            "latency": latency,
            "accuracy": accuracy,
            "max_drop": max_drop,
        }
        if max_drop is not None and accuracy["top1_drop_points"] > max_drop:
            manifest["passed"] = False
            raise BuildCheckFailed(
                f"top-1 drop {accuracy['top1_drop_points']:.2f} points > --max-drop {max_drop:g} "
                f"(FP32 {accuracy['top1_fp32']:.2f}%, {precision} {accuracy['top1']:.2f}% on {val}); "
                "nothing written", manifest)
        manifest["passed"] = True
        man_tmp = tmp / "manifest.json"
        man_tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        if manifest_path.exists():  # never pair a stale manifest with the new artifact
            manifest_path.unlink()
        os.replace(art_tmp, artifact)
        os.replace(man_tmp, manifest_path)
    return manifest
