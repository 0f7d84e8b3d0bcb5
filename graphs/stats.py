"""Parameter and multiply-accumulate counts of an ONNX model, at batch 1."""
from __future__ import annotations

import numpy as np
import onnx

from graphs.shapes import tensor_shapes
from graphs.spatial import spatial_sizes


def count_params(model: onnx.ModelProto) -> int:
    """Elements of floating-point initializers (weights, biases, BN statistics)."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    return int(sum(np.prod(i.dims) for i in model.graph.initializer if i.data_type in floats))


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul for one input."""
    return sum(macs_per_node(model).values())


def macs_per_node(model: onnx.ModelProto, shapes: dict | None = None) -> dict[str, int]:
    """Node name -> multiply-accumulates, for the ops that carry nearly all of a CNN's arithmetic."""
    shapes = shapes or tensor_shapes(model)
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    spatial = None  # filled in only when inference left a conv's spatial size unknown
    per_node: dict[str, int] = {}
    for node in model.graph.node:
        total = 0
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose") and len(out) == 4 and not (out[2] and out[3]):
            spatial = spatial_sizes(model, shapes) if spatial is None else spatial
            out = (out[0], out[1], *spatial.get(node.output[0], (out[2], out[3])))
        out = [1 if d is None else d for d in out]
        if node.op_type in ("Conv", "ConvTranspose"):
            w = dims.get(node.input[1]) or shapes.get(node.input[1])
            if w is None:
                continue
            if node.op_type == "Conv":
                total = int(np.prod(out)) * int(np.prod(w[1:]))
            else:
                inp = shapes.get(node.input[0])
                total = int(np.prod([1 if d is None else d for d in inp])) * int(np.prod(w[1:])) if inp else 0
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if a is None or not a:
                continue
            k = a[0] if node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute) else a[-1]
            total = int(np.prod(out)) * int(k or 1)
        if total:
            per_node[node.name] = total
    return per_node
