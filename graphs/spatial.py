"""Spatial sizes of 4-D activations where ONNX shape inference leaves them unknown.

Exporters compute some slice bounds at run time (ultralytics' C2f `chunk`: Shape -> Gather -> Div ->
Slice), and ONNX shape inference then loses every dimension downstream of the Slice, although only
the channel axis was sliced. MAC counts need the spatial size: without it yolov8n's C2f bottlenecks
counted ~0 MACs at 640x640, and the latency model credited their layers nothing. This walks the graph
once: convs and pools apply their kernel arithmetic, Resize its constant scales, and every other op
keeps the spatial size of its first 4-D input. It is used for counting only, never for channel analysis.
"""
from __future__ import annotations

import math

import onnx
from onnx import numpy_helper

WINDOWED = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
GLOBAL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _known(shape) -> tuple[int, int] | None:
    if shape is not None and len(shape) == 4 and shape[2] and shape[3]:
        return int(shape[2]), int(shape[3])
    return None


def _windowed(node: onnx.NodeProto, size: tuple[int, int], weights: dict) -> tuple[int, int] | None:
    a = _attrs(node)
    kernel = a.get("kernel_shape")
    if kernel is None and node.op_type in ("Conv", "ConvTranspose") and node.input[1] in weights:
        kernel = list(weights[node.input[1]][2:])
    if kernel is None or len(kernel) != 2:
        return None
    strides, dilations = a.get("strides", [1, 1]), a.get("dilations", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    out = []
    for i in range(2):
        if node.op_type == "ConvTranspose":
            out.append((size[i] - 1) * strides[i] - pads[i] - pads[i + 2] + dilations[i] * (kernel[i] - 1) + 1)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(math.ceil(size[i] / strides[i]))
        else:
            span = size[i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1
            rounding = math.ceil if a.get("ceil_mode", 0) else math.floor
            out.append(int(rounding(span / strides[i])) + 1)
    return out[0], out[1]


def _resized(node: onnx.NodeProto, size: tuple[int, int], consts: dict) -> tuple[int, int] | None:
    scales = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sizes = consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if sizes is not None and sizes.size == 4:
        return int(sizes[2]), int(sizes[3])
    if scales is not None and scales.size == 4:
        return int(math.floor(size[0] * scales[2])), int(math.floor(size[1] * scales[3]))
    return None


def spatial_sizes(model: onnx.ModelProto, shapes: dict) -> dict[str, tuple[int, int]]:
    """Tensor name -> (height, width) for the 4-D activations whose size can be told (see module doc)."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    weights = {name: v.shape for name, v in consts.items()}
    sizes: dict[str, tuple[int, int]] = {}
    for name, shape in shapes.items():
        if _known(shape):
            sizes[name] = _known(shape)
    for node in model.graph.node:  # ONNX nodes are in topological order
        if not node.output or node.output[0] in sizes or not node.input:
            continue
        shape = shapes.get(node.output[0])
        if shape is not None and len(shape) != 4:
            continue
        inputs = [sizes[i] for i in node.input if i in sizes]
        if not inputs:
            continue
        if node.op_type in GLOBAL:
            out = (1, 1)
        elif node.op_type in WINDOWED:
            out = _windowed(node, sizes[node.input[0]], weights) if node.input[0] in sizes else None
        elif node.op_type in ("Resize", "Upsample"):
            out = _resized(node, sizes[node.input[0]], consts) if node.input[0] in sizes else None
        elif node.op_type in ("Reshape", "Flatten", "Transpose", "DepthToSpace", "SpaceToDepth"):
            out = None  # moves spatial positions: not guessed
        else:
            out = inputs[0]
        if out is not None and min(out) > 0:
            for name in node.output:
                sizes[name] = (int(out[0]), int(out[1]))
    return sizes
