"""Which resolution each channel group runs at: its output stride, the input side over its feature map's side.

A latency-driven solver cuts the high-resolution groups hardest (a channel there costs the most time),
and those are the groups that hold the low-level features every later layer reads. Naming them by
stride (`stride<=4`: the groups at 1/2 and 1/4 of the input's side) lets one rule protect them in any
CNN, where a name pattern (`blocks.1.*`) fits one architecture.
"""
from __future__ import annotations

import operator
import re

from graphs.onnx_io import model_input_shape
from graphs.shapes import measured_shapes

SELECTOR = re.compile(r"^stride\s*(<=|>=|==|<|>)\s*(\d+)$")
_COMPARE = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}


def group_strides(analysis) -> dict[str, int]:
    """Group id -> the output stride of its highest-resolution producer. Groups with no 4-D producer
    (a Gemm's outputs, a graph input) have none. Sizes that shape inference lost (timm's TF-SAME
    padding is computed at run time) are read from one onnxruntime run."""
    shape = model_input_shape(analysis.model)
    if shape is None or len(shape) != 4:
        return {}
    outputs = {node.name: node.output[0] for node in analysis.model.graph.node if node.output}
    produced = [outputs[name] for group in analysis.groups for name in group.nodes if name in outputs]
    shapes = {name: analysis.shapes.get(name) for name in produced}
    lost = [name for name, dims in shapes.items() if not _spatial(dims)]
    shapes.update(measured_shapes(analysis.model, lost) if lost else {})
    strides: dict[str, int] = {}
    for group in analysis.groups:
        sizes = [_spatial(shapes.get(outputs.get(name))) for name in group.nodes]
        sizes = [size for size in sizes if size]
        if sizes:
            strides[group.id] = min(max(round(shape[2] / h), round(shape[3] / w)) for h, w in sizes)
    return strides


def _spatial(dims) -> tuple[int, int] | None:
    return (int(dims[2]), int(dims[3])) if dims is not None and len(dims) == 4 and dims[2] and dims[3] else None


def is_selector(pattern: str) -> bool:
    return SELECTOR.match(pattern) is not None


def selects(pattern: str, stride: int | None) -> bool:
    """Whether a `stride<=N`-style selector takes a group of this stride (None: no spatial size)."""
    match = SELECTOR.match(pattern)
    return stride is not None and _COMPARE[match[1]](stride, int(match[2]))
