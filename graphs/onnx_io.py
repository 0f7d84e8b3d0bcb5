"""Loading, normalising, hashing and saving ONNX models, with one-line errors for bad files."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from graphs.atomic import write_bytes
from graphs.errors import InputError

# onnxruntime 1.31 loads IR version <= 13; onnx 1.23 writes 14 unless told otherwise. 10 is what
# every model written here carries; the one place that sets it is `cap_ir_version`.
MAX_IR_VERSION = 10


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (with external data if any) or raise InputError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for truncated/random bytes
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise InputError(f"{path}: not an ONNX model (the graph has no nodes)")
    return model


def model_sha256(model: onnx.ModelProto) -> str:
    """Hash of the serialized model: identifies the exact graph a Plan or a table was made for."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn tensor-valued Constant nodes into initializers, so every constant can be sliced alike."""
    graph = model.graph
    kept = []
    by_name = {init.name: init for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            source = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in by_name and node.output[0] not in outputs:
            # The legacy exporter shares equal initializers through Identity nodes; give each its own.
            source = by_name[node.input[0]]
        else:
            kept.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(source)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        by_name[tensor.name] = tensor
    del graph.node[:]
    graph.node.extend(kept)
    # Initializers must not also be listed as graph inputs for our passes (old exporters did that).
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    del graph.input[:]
    graph.input.extend(inputs)
    return model


def model_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata_props (export records compress.spec, compress.input_shape, compress.num_classes)."""
    return {p.key: p.value for p in model.metadata_props}


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def cap_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    """Lower the IR version to one onnxruntime loads (in place; returned for chaining)."""
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def model_input_shape(model: onnx.ModelProto) -> list[int] | None:
    """N,C,H,W of the model's input: what `compress export` recorded, else the graph's own fixed dims
    (a symbolic batch counts as 1); None when the graph leaves another dim open."""
    recorded = model_metadata(model).get("compress.input_shape")
    if recorded:
        return [int(v) for v in recorded.split(",")]
    weights = {i.name for i in model.graph.initializer}  # older exporters list initializers as inputs
    inputs = [i for i in model.graph.input if i.name not in weights]
    if not inputs:
        return None
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if dims and dims[0] is None:
        dims[0] = 1
    return dims if dims and None not in dims else None


def require_input_shape(model: onnx.ModelProto, source: str = "the model") -> list[int]:
    shape = model_input_shape(model)
    if shape is None:
        raise InputError(f"{source}: its input shape is not fixed and not recorded; export it with "
                         "`compress export --input-shape N,C,H,W`")
    return shape


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write atomically so a kill never leaves a truncated model."""
    cap_ir_version(model)
    write_bytes(path, model.SerializeToString())
