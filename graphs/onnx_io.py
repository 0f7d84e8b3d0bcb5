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

# onnxruntime 1.31 loads IR version <= 13; onnx 1.23 writes 14 unless told otherwise.
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


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write atomically so a kill never leaves a truncated model."""
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    write_bytes(path, model.SerializeToString())
