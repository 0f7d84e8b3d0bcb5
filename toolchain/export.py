"""torch -> ONNX with BatchNorm kept and every parameter's torch name AND value preserved.

This is the join key between `graphs` (ONNX) and `toolchain` (torch): an initializer named
`layer1.0.conv1.weight` must hold exactly the torch tensor of that name. The legacy exporter with
constant folding off keeps BN unfolded (PLATFORM.md); its one remaining habit, de-duplicating equal
initializers behind Identity nodes, is undone here so each parameter is its own initializer.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
import warnings
from pathlib import Path

import numpy as np

import onnx
import torch
from torch import nn

from graphs.atomic import write_bytes
from graphs.onnx_io import cap_ir_version
from graphs.errors import InputError

__all__ = ["export_onnx", "export_spec", "undo_initializer_dedup"]



def _count_outputs(out) -> int:
    if isinstance(out, torch.Tensor):
        return 1
    if isinstance(out, (tuple, list)):
        return sum(_count_outputs(o) for o in out)
    if isinstance(out, dict):
        return sum(_count_outputs(o) for o in out.values())
    return 0  # non-tensor leaves are not graph outputs


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(e).__name__


def undo_initializer_dedup(model: onnx.ModelProto) -> int:
    """Replace each Identity fed by an initializer with an initializer of its own (a copy).

    The legacy exporter keeps one copy of equal tensors (e.g. all BN weights == 1 at random init)
    and re-creates the others by Identity nodes named after the torch parameter. Graph surgery
    slices initializers per layer, so a shared one would couple unrelated layers. Returns the number
    of Identity nodes removed.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    keep, removed = [], 0
    for node in graph.node:  # topological order, so Identity chains resolve front to back
        if (node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits
                and node.output[0] not in inits and node.output[0] not in graph_outputs):
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            inits[copy.name] = copy
            removed += 1
        else:
            keep.append(node)
    if removed:
        del graph.node[:]
        graph.node.extend(keep)
    return removed


def export_onnx(model: nn.Module, input_shape, path: str | os.PathLike | None, *, opset: int = 17,
                spec: str | None = None, num_classes: int | None = None) -> onnx.ModelProto:
    """Export `model` (put in eval mode) for `input_shape`, batch dimension dynamic.

    Writes `path` atomically when given; returns the checked ModelProto. Raises InputError when the
    model cannot be traced/exported.
    """
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise InputError(f"input shape {input_shape!r} must be positive integers, batch first (e.g. 1,3,224,224)")
    name = spec or type(model).__name__
    model = model.eval()
    x = torch.randn(*shape)
    try:
        with torch.no_grad():
            n_out = _count_outputs(model(x))
    except Exception as e:
        raise InputError(f"{name} does not run on input shape {shape}: {type(e).__name__}: {_first_line(e)}") from e
    if n_out == 0:
        raise InputError(f"{name} returns no tensor, nothing to export")
    outputs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    dynamic = {n: {0: "batch"} for n in ["input", *outputs]}

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad(), _quiet_stdout(), _no_mha_fastpath():
            warnings.simplefilter("always")
            # Legacy exporter + no constant folding: BN stays a node, params keep torch names/values.
            torch.onnx.export(model, (x,), buf, dynamo=False, do_constant_folding=False,
                              opset_version=opset, input_names=["input"], output_names=outputs,
                              dynamic_axes=dynamic)
    except Exception as e:
        raise InputError(f"cannot export {name} to ONNX: {type(e).__name__}: {_first_line(e)}") from e
    tracer = [str(w.message) for w in caught if w.category.__name__ == "TracerWarning"]

    proto = onnx.load_from_string(buf.getvalue())
    undo_initializer_dedup(proto)
    cap_ir_version(proto)
    meta = {"compress.input_shape": ",".join(map(str, shape))}
    if spec:
        meta["compress.spec"] = spec
    if num_classes is not None:
        meta["compress.num_classes"] = str(num_classes)
    _set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    session = _onnxruntime_session(data, name)
    if tracer and session is not None:
        # Tracing turned a tensor into a Python value: a branch or size may be baked in. Check.
        _check_traced_faithfully(model, session, shape, name, tracer[0])
    if path is not None:
        _write_model_file(Path(path), data)
    return proto


def _set_metadata(proto: onnx.ModelProto, meta: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for k, v in meta.items():
        if k in existing:
            existing[k].value = v
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v


def _onnxruntime_session(data: bytes, name: str):
    try:
        import onnxruntime as ort
    except ImportError:  # onnxruntime is an extra (cpu/gpu); the checker already passed
        return None
    try:
        return ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise InputError(f"onnxruntime cannot load the export of {name}: {_first_line(e)}") from e


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    return []


def _check_traced_faithfully(model, session, shape, name: str, warning: str) -> None:
    """Compare onnxruntime with torch on fresh inputs (batch 3, x and -x: a sign test flips)."""
    x = torch.randn(3, *shape[1:])
    for inp in (x, -x):
        with torch.no_grad():
            ref = [t.numpy() for t in _flat(model(inp))]
        try:
            got = session.run(None, {"input": inp.numpy()})
        except Exception as e:
            got, err = None, _first_line(e)
        else:
            err = None
        for r, g in zip(ref, got or ref):
            if not np.isfinite(r).all():
                continue
            tol = 1e-4 * max(1.0, float(np.abs(r).max()))
            if g.shape != r.shape or float(np.abs(g - r).max()) > tol:
                err = "outputs differ from torch"
        if err:
            raise InputError(f"cannot export {name} faithfully ({err} on a new input; data-dependent "
                             f"control flow?); tracer said: {warning.split('. ')[0]}")


@contextmanager
def _no_mha_fastpath():
    """MultiheadAttention's eval fast path is one fused op the legacy exporter cannot write."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


@contextmanager
def _quiet_stdout():
    """The exporter prints the whole TorchScript graph on failure to C++ stdout, whatever the log
    setting: point file descriptor 1 at /dev/null meanwhile, so a bad model gives one line, not pages."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _write_model_file(path: Path, data: bytes) -> None:
    if path.is_symlink():
        raise InputError(f"{path}: is a symlink; give a real file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a regular file where a directory is expected
        raise InputError(f"{path}: cannot write there ({exc.strerror})") from None
    write_bytes(path, data)


def export_spec(spec: str, path: str | os.PathLike | None, input_shape=None,
                checkpoint: str | None = None, *, opset: int = 17, num_classes: int | None = None) -> onnx.ModelProto:
    """Build the model named by `spec` (see toolchain.zoo), load `checkpoint`, export it.

    A non-default `num_classes` is recorded in the metadata, so the torch side rebuilds the same head.
    """
    from toolchain.zoo import build_model, default_input_shape

    model = build_model(spec, checkpoint=checkpoint, num_classes=num_classes)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(spec)
    return export_onnx(model, shape, path, opset=opset, spec=spec, num_classes=num_classes)
