"""`compress build`: a pruned model -> a deployable artifact (ORT model or TensorRT engine) + manifest.

    build(source, backend, precision, out, calib=None, batch="1:1:1", calib_method="minmax",
          max_drop=None, val=None, **options) -> manifest dict

source     a `compress prune` output DIR (DIR/model.onnx, input shape from DIR/plan.json) or an .onnx
backend    any latency backend with an `artifact()` (toolchain/latency/backends): "ort" writes an
           optimised / FP16 / INT8-QDQ ONNX, "tensorrt" a serialized engine built here through
           Polygraphy (not portable across GPUs). This module never asks which one it holds: the
           backend builds the artifact, and its runner runs the checks.
out        the artifact file; its manifest is OUT.manifest.json beside it (e.g. r20.int8.onnx ->
           r20.int8.onnx.manifest.json). When OUT is an existing directory or ends with "/", the
           artifact is OUT/<backend's artifact name> and the manifest OUT/manifest.json.

The manifest records backend + version, device, precision, inputs and batch profile, sha256 of the
source ONNX and of the artifact, calibration digest + method + cache use, latency measured here
(median ms at the OPT batch; for fp16/int8 also the ratio to the FP32 model on the same backend,
interleaved run by run), and the accuracy check: top-1 of FP32 (onnxruntime) and of the artifact on a
validation set, output cosine similarity, and Polygraphy's Comparator verdict. `max_drop` (top-1
points) fails the build with BuildCheckFailed (CLI exit 1) when exceeded.

Everything is written to temporary files and renamed at the end (artifact, then manifest): a failed
build - bad input, engine build failure, failed check - leaves neither.
Bad input raises graphs.errors.InputError (CLI exit 2, one line).
"""
from __future__ import annotations

import datetime as _dt
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from graphs.atomic import write_bytes, write_json
from graphs.errors import InputError
from toolchain.build_check import accuracy_check, latency
from toolchain.build_inputs import calibration_request, input_info, layout, parse_batch, resolve_source, sha256_file
from toolchain.latency.backends import get_backend
from toolchain.latency.backends.base import PRECISIONS

MANIFEST_VERSION = 1
DEFAULT_VAL_COUNT = 1000


class BuildCheckFailed(Exception):
    """The artifact built but failed the accuracy check (CLI exit 1); nothing was written."""

    def __init__(self, message: str, manifest: dict):
        super().__init__(message)
        self.manifest = manifest


@dataclass
class _Request:
    onnx_path: Path
    input_shape: list[int]
    plan_model: dict
    input_name: str
    dynamic: bool
    profile: tuple[int, int, int]
    val: str | None
    artifact: Path
    manifest: Path
    normalize: str = "auto"  # how DATA specs (calibration, validation) are normalised


def _request(source, backend, precision, out, batch, calib, val, max_drop, normalize) -> _Request:
    """Validate everything the user gave before any work is done."""
    from toolchain.data_transforms import check_normalize  # torchvision: not at import (build's Jetson image)

    check_normalize(normalize)
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: fp32, fp16 or int8")
    if max_drop is not None and (not isinstance(max_drop, (int, float)) or max_drop < 0):
        raise InputError(f"--max-drop must be a non-negative number of top-1 points, got {max_drop!r}")
    profile = parse_batch(batch)
    onnx_path, input_shape, plan_model = resolve_source(source)
    input_name, dynamic = input_info(onnx_path)
    if not dynamic and profile != (input_shape[0],) * 3:
        raise InputError(f"{onnx_path}: the batch dimension is fixed at {input_shape[0]}, asked for "
                         f"{':'.join(map(str, profile))}: export with a dynamic batch dimension")
    if precision == "int8" and not calib:
        raise InputError("int8 needs --calib DATA (a DATA spec, .npy/.npz file or folder)")
    if val is None and calib:
        from calib.readers import resolve

        kind, what = resolve(calib)
        val = what if kind == "spec" else None
    if max_drop is not None and not val:
        raise InputError("--max-drop needs labelled validation data: pass --val DATA")
    artifact, manifest = layout(out, backend.artifact_name)
    if manifest.resolve() == artifact.resolve():
        raise InputError(f"{out}: artifact and manifest would be the same file")
    return _Request(onnx_path, input_shape, plan_model, input_name, dynamic, profile, val, artifact, manifest,
                    normalize)


def build(source: str, backend: str, precision: str, out: str, calib: str | None = None,
          batch: str = "1:1:1", calib_method: str = "minmax", max_drop: float | None = None,
          val: str | None = None, *, provider: str | None = None, cache_dir: str | None = None,
          calib_count: int = 256, val_count: int = DEFAULT_VAL_COUNT, workspace_mb: int = 1024,
          timing_cache: str | None = None, latency_runs: int | None = None, measure: bool = True,
          int8_mode: str = "qdq", normalize: str = "auto") -> dict:
    """Build a deployable artifact from `source`; returns the manifest (also written beside it).

    Keyword options: provider (where the backend runs), cache_dir (calibration cache, default
    ~/.cache/compress/calib), calib_count, val_count, workspace_mb / timing_cache (TensorRT),
    latency_runs (None: the protocol's defaults), measure (False: no latency), int8_mode ("qdq";
    "calibrator": TensorRT 10.x entropy calibration), normalize (how DATA specs are normalised: the
    model's training normalisation). Raises InputError on bad input or a failed
    engine build, BuildCheckFailed when the top-1 drop exceeds max_drop; in both cases nothing is written.
    """
    options = {"provider": provider, "workspace_mb": workspace_mb, "timing_cache": timing_cache}
    be = get_backend(backend, precision=precision, **options)  # fails fast: TensorRT or the GPU missing
    req = _request(source, be, precision, out, batch, calib, val, max_drop, normalize)
    calibration = calibration_request(calib, precision, req.input_shape, req.input_name, calib_method,
                                      calib_count, cache_dir, int8_mode, normalize)
    try:
        req.artifact.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot write there ({e.strerror})") from None
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{req.artifact.name}.",
                                                                   dir=req.artifact.parent)))
        art = be.artifact(req.onnx_path, req.profile, calibration, tmp)
        art_tmp = tmp / "artifact"
        art_tmp.write_bytes(art.data)
        candidate = stack.enter_context(be.prepare(art.source, req.profile[1]))  # bound at the OPT batch
        accuracy = _accuracy(stack, req, candidate, val_count, precision)
        timing = _latency(stack, req, be, backend, candidate, precision, options, latency_runs) if measure else None
        manifest = _manifest(req, be, art, art_tmp, precision, calibration, accuracy, timing, max_drop)
        _check(manifest, max_drop, precision, req.val)
        if req.manifest.exists():  # never pair a stale manifest with the new artifact
            req.manifest.unlink()
        write_bytes(req.artifact, art.data)
        write_json(manifest, req.manifest)
    return manifest


def _accuracy(stack: ExitStack, req: _Request, candidate, count: int, precision: str) -> dict | None:
    """FP32 onnxruntime (the reference every artifact answers to) vs the artifact's own runner."""
    if not req.val:
        return None
    eval_batch = max(1, min(64, req.profile[2])) if req.dynamic else req.input_shape[0]
    reference = stack.enter_context(get_backend("ort").prepare(req.onnx_path, eval_batch))
    return accuracy_check(reference, candidate, req.val, req.input_shape, count, batch=eval_batch,
                          pad=not req.dynamic, precision=precision, normalize=req.normalize)


def _latency(stack: ExitStack, req: _Request, be, backend: str, candidate, precision: str, options: dict,
             runs: int | None) -> dict:
    reference = None
    if precision != "fp32":  # the same backend at FP32 on the same ONNX: the ratio a deployment gains
        fp32 = get_backend(backend, precision="fp32", **options)
        reference = stack.enter_context(fp32.prepare(req.onnx_path, req.profile[1]))
    return {"batch": req.profile[1], **latency(candidate, reference, runs)}


def _manifest(req: _Request, be, art, art_tmp: Path, precision: str, calibration, accuracy, timing,
              max_drop) -> dict:
    calib_record = None
    if calibration is not None:
        calib_record = {**calibration.record(), **{k: v for k, v in art.calibration.items() if k in (
            "method", "format", "activations", "weights", "bias", "preprocessed", "cache_file", "cache_hit",
            "calibrated")}}
    return {
        "version": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifact": {"file": req.artifact.name, "format": art.format, "sha256": sha256_file(art_tmp),
                     "bytes": art_tmp.stat().st_size},
        "source": {"onnx": str(req.onnx_path), "onnx_sha256": sha256_file(req.onnx_path),
                   "spec": req.plan_model.get("spec"), "unpruned_onnx_sha256": req.plan_model.get("onnx_sha256")},
        "backend": art.backend,
        "device": be.device(),
        "precision": precision,
        "inputs": [{"name": req.input_name, "shape": [-1 if req.dynamic else req.input_shape[0],
                                                      *req.input_shape[1:]], "dtype": "float32"}],
        "batch": {"min": req.profile[0], "opt": req.profile[1], "max": req.profile[2]},
        "data_normalize": req.normalize if (calibration is not None or req.val) else None,
        "calibration": calib_record,
        "latency": timing,
        "accuracy": accuracy,
        "max_drop": max_drop,
    }


def _check(manifest: dict, max_drop, precision: str, val) -> None:
    accuracy = manifest["accuracy"]
    if max_drop is not None and accuracy["top1_drop_points"] > max_drop:
        manifest["passed"] = False
        raise BuildCheckFailed(
            f"top-1 drop {accuracy['top1_drop_points']:.2f} points > --max-drop {max_drop:g} "
            f"(FP32 {accuracy['top1_fp32']:.2f}%, {precision} {accuracy['top1']:.2f}% on {val}); "
            "nothing written", manifest)
    manifest["passed"] = True
