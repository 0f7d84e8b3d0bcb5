"""`compress build`'s inputs: the source ONNX and its input shape, the batch profile, where outputs go,
and the calibration request. Everything here validates user input: InputError, one line."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from graphs.errors import InputError


def sha256_file(path: Path) -> str:
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


def layout(out: str, artifact_name: str) -> tuple[Path, Path]:
    """(artifact path, manifest path): OUT and OUT.manifest.json, or DIR/artifact_name and DIR/manifest.json."""
    text = str(out)
    p = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or p.is_dir():
        return p / artifact_name, p / "manifest.json"
    return p, p.with_name(p.name + ".manifest.json")


def input_info(onnx_path: Path) -> tuple[str, bool]:
    """(input name, batch dim is dynamic)."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inp = [i for i in m.graph.input if i.name not in inits][0]
    d0 = inp.type.tensor_type.shape.dim[0]
    return inp.name, not d0.HasField("dim_value")


def calibration_request(calib: str | None, precision: str, input_shape, input_name: str, method: str,
                        count: int, cache_dir: str | None, int8_mode: str, normalize: str = "auto"):
    """The Calibration an int8 build needs (None otherwise); wrong data shapes are InputError."""
    from calib.calibration import INT8_MODES, Calibration
    from calib.readers import digest_array, load_calibration

    if int8_mode not in INT8_MODES:
        raise InputError(f"unknown int8 mode {int8_mode!r}: {' or '.join(INT8_MODES)}")
    if precision != "int8":
        return None
    if not calib:
        raise InputError("int8 needs --calib DATA (a DATA spec, .npy/.npz file or folder)")
    from calib.qdq import METHODS

    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}: known are {', '.join(METHODS)}")
    data = load_calibration(calib, input_shape, count, normalize)
    return Calibration(data, digest_array(data), calib, method, input_name, cache_dir, int8_mode)
