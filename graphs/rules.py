"""Per-op channel rules: how each ONNX op maps channels from its inputs to its outputs.

A rule reads the input layouts from the tracer, records which parameter axes follow which
channels, unions channels that must be pruned together, and sets the output layouts. Support
for a new op is one small function registered here (ops that move channels between tensors
and positions: graphs/layout_rules.py). An op without a rule freezes the channels it
touches (with the reason) instead of failing the analysis.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx

from graphs.channels import Fix, Layout
from graphs.registry import registrar

if TYPE_CHECKING:
    from graphs.deps import Tracer

RULES: dict[str, Callable[["Tracer", onnx.NodeProto], None]] = {}

UNARY_OPS = (
    "Relu LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Clip Elu Selu Celu Gelu Erf Exp Log Sqrt Neg "
    "Abs Softplus Softsign Mish Identity Dropout Cast Floor Ceil Round Reciprocal Sign Sin Cos ThresholdedRelu "
    "Softmax LogSoftmax LRN Swish"
).split()
POOL_OPS = "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool Resize Upsample".split()
BINARY_OPS = "Add Sub Mul Div Pow Max Min Sum Mean Where".split()


rule = registrar(RULES)  # @rule("Relu", ...) registers a function for those op types


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@rule(*UNARY_OPS, *POOL_OPS)
def passthrough(t: "Tracer", node: onnx.NodeProto) -> None:
    """Channel i in, channel i out. (A softmax over channels stays the same function of the kept
    channels in both models, so it passes too.)"""
    layout = t.layout(node.input[0])
    if node.op_type == "PRelu" and layout is not None:
        t.slice_constant(node.input[1], layout, node)
    if node.op_type == "LRN" and layout is not None:
        t.freeze(layout, f"LRN {node.name} mixes neighbouring channels")
    t.set_layout(node.output[0], layout)


@rule("BatchNormalization", "InstanceNormalization")
def normalization(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    if layout is not None:
        if layout.axes != (1,) or layout.inner != 1:
            t.freeze(layout, f"{node.op_type} {node.name} is not on the channel axis")
        else:
            for name in node.input[1:]:
                t.slice_param(name, 0, layout.ids, "param", node)
    t.set_layout(node.output[0], layout)


@rule("LayerNormalization")
def layer_norm(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    if layout is not None:
        axis = attrs(node).get("axis", -1) % layout.rank
        if len(layout.axes) == 1 and layout.axis == layout.rank - 1 and axis == layout.axis and layout.inner == 1:
            for name in node.input[1:]:
                t.slice_param(name, 0, layout.ids, "param", node)
        elif layout.axes[-1] >= axis:
            t.freeze(layout, f"LayerNormalization {node.name} normalizes channels together with other axes")
    t.set_layout(node.output[0], layout)


@rule("GroupNormalization")
def group_norm(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    if layout is not None:
        t.freeze(layout, f"GroupNormalization {node.name}: channel groups are fixed")
    t.set_layout(node.output[0], layout)


@rule("Conv")
def conv(t: "Tracer", node: onnx.NodeProto) -> None:
    weight = t.initializer(node.input[1])
    layout = t.layout(node.input[0])
    if weight is None:
        if layout is not None:
            t.freeze(layout, f"Conv {node.name} has a computed weight")
        t.set_layout(node.output[0], t.new_space(node, t.channels_of(node.output[0], 1), frozen="computed weight"))
        return
    groups = attrs(node).get("group", 1)
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    if layout is not None and (layout.axes != (1,) or layout.inner != 1):
        t.freeze(layout, f"Conv {node.name} input channels are not on axis 1")
        layout = None
    if groups > 1 and in_per_group == 1 and out_channels % groups == 0 and layout is not None:
        # Depthwise: output channel j is computed from input channel j // multiplier only.
        out_ids = np.repeat(layout.ids, out_channels // groups)
        t.fixes.append(Fix("conv_groups", node.name, [layout.ids]))
        _produce(t, node, Layout(out_ids, (1,), layout.rank), weight_axis=0)
        return
    out = t.new_space(node, out_channels)
    if layout is not None:
        if groups > 1:
            # Grouped conv: keep the same positions in every group, so groups stay equal in width.
            t.tie_equal_parts(layout.ids, groups)
            t.slice_param(node.input[1], 1, layout.ids[:in_per_group], "in", node)
        else:
            t.slice_param(node.input[1], 1, layout.ids, "in", node)
    if groups > 1:
        t.tie_equal_parts(out.ids, groups)
        if t.tie_grouped_sides and layout is not None and layout.ids.size == out_channels:
            # Same width per group in and out: keep the same positions on both sides. Narrowing the
            # output side alone leaves the conv off the runtime's grouped kernels: regnet_y_800mf's
            # 20-group convs at 8 of 16 channels per group ran at 1.053x the unpruned latency on the
            # output side only, 0.957x on the input side only, 0.883x on both; at every group count
            # both sides together were the fastest (ORT CPU, bench/results/grouped_alignment_sides.txt).
            t.sets.union(layout.ids, out.ids)
    _produce(t, node, out, weight_axis=0)


def _produce(t: "Tracer", node: onnx.NodeProto, out: Layout, weight_axis: int) -> None:
    """A conv's output channels: its weight's output axis, its bias, the layout of its output."""
    t.slice_param(node.input[1], weight_axis, out.ids, "out", node)
    if len(node.input) > 2 and node.input[2]:
        t.slice_param(node.input[2], 0, out.ids, "param", node)
    t.set_layout(node.output[0], out)


@rule("ConvTranspose")
def conv_transpose(t: "Tracer", node: onnx.NodeProto) -> None:
    weight = t.initializer(node.input[1])
    layout = t.layout(node.input[0])
    groups = attrs(node).get("group", 1)
    if weight is None or groups != 1:
        if layout is not None:
            t.freeze(layout, f"ConvTranspose {node.name} is grouped or has a computed weight")
        t.set_layout(node.output[0], t.new_space(node, t.channels_of(node.output[0], 1), frozen="grouped ConvTranspose"))
        return
    if layout is not None:
        t.slice_param(node.input[1], 0, layout.ids, "in", node)
    _produce(t, node, t.new_space(node, weight.shape[1]), weight_axis=1)


@rule("Gemm")
def gemm(t: "Tracer", node: onnx.NodeProto) -> None:
    a = attrs(node)
    weight = t.initializer(node.input[1])
    layout = t.layout(node.input[0])
    if weight is None or a.get("transA", 0):
        if layout is not None:
            t.freeze(layout, f"Gemm {node.name} has a computed weight or transA")
        t.set_layout(node.output[0], None)
        return
    trans_b = a.get("transB", 0)
    in_axis, out_axis = (1, 0) if trans_b else (0, 1)
    if layout is not None:
        if layout.axes != (1,) or layout.rank != 2 or layout.positions().size != weight.shape[in_axis]:
            t.freeze(layout, f"Gemm {node.name} input features do not map to channels")
        else:
            t.slice_param(node.input[1], in_axis, layout.positions(), "in", node)
    out = t.new_space(node, weight.shape[out_axis], rank=2)
    t.slice_param(node.input[1], out_axis, out.ids, "out", node)
    if len(node.input) > 2 and node.input[2]:
        t.slice_constant(node.input[2], out, node)
    t.set_layout(node.output[0], out)


@rule("MatMul")
def matmul(t: "Tracer", node: onnx.NodeProto) -> None:
    weight_name, in_axis, out_axis = node.input[1], 0, 1
    producer = t.producer(weight_name)
    if producer is not None and producer.op_type == "Transpose" and t.initializer(producer.input[0]) is not None:
        # torch Linear exports as MatMul(x, Transpose(weight)): slice the torch-named weight itself.
        weight_name, in_axis, out_axis = producer.input[0], 1, 0
    weight = t.initializer(weight_name)
    layout = t.layout(node.input[0])
    if weight is None or weight.ndim != 2:
        for name in node.input:
            if t.layout(name) is not None:
                t.freeze(t.layout(name), f"MatMul {node.name} multiplies two activations")
        t.set_layout(node.output[0], None)
        return
    rank = layout.rank if layout is not None else (len(t.shape(node.input[0]) or (0, 0)))
    if layout is not None:
        if layout.axes != (rank - 1,) or layout.positions().size != weight.shape[in_axis]:
            t.freeze(layout, f"MatMul {node.name} contracts an axis that is not the channel axis")
        else:
            t.slice_param(weight_name, in_axis, layout.positions(), "in", node)
    out = t.new_space(node, weight.shape[out_axis], rank=rank, axis=rank - 1, weight=weight_name)
    t.slice_param(weight_name, out_axis, out.ids, "out", node)
    t.set_layout(node.output[0], out)


@rule(*BINARY_OPS)
def elementwise(t: "Tracer", node: onnx.NodeProto) -> None:
    inputs = [name for name in node.input if name]
    if node.op_type == "Where":
        inputs = inputs[1:]
    out_shape = t.shape(node.output[0])
    out_rank = len(out_shape) if out_shape is not None else max((t.rank(n) or 0) for n in inputs)
    layouts = []
    for name in inputs:
        layout = t.layout(name)
        if layout is not None:
            shift = out_rank - layout.rank
            layouts.append(layout.moved(axes=tuple(a + shift for a in layout.axes), rank=out_rank))
    if not layouts:
        t.set_layout(node.output[0], None)
        return
    first = layouts[0]
    for other in layouts[1:]:
        if other.axes == first.axes and other.ids.shape == first.ids.shape and other.inner == first.inner:
            t.sets.union(first.ids, other.ids)
        else:
            t.freeze(first, f"{node.op_type} {node.name} combines tensors with different channel layouts")
            t.freeze(other, f"{node.op_type} {node.name} combines tensors with different channel layouts")
    for name in inputs:
        if t.layout(name) is None:
            t.broadcast_operand(name, first, out_rank, node)
    t.set_layout(node.output[0], first)


@rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceL1")
def reduce(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    if layout is None:
        t.set_layout(node.output[0], None)
        return
    a = attrs(node)
    axes = t.consts.value(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("axes")
    axes = list(range(layout.rank)) if axes is None else sorted(int(x) % layout.rank for x in np.atleast_1d(axes))
    if any(x in layout.axes for x in axes):
        t.set_layout(node.output[0], None)  # a reduction over channels: its result has no channels
        return
    if a.get("keepdims", 1):
        t.set_layout(node.output[0], layout)
    else:
        new_axes = tuple(x - sum(r < x for r in axes) for x in layout.axes)
        t.set_layout(node.output[0], layout.moved(axes=new_axes, rank=layout.rank - len(axes)))


@rule("Pad")
def pad(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    if layout is not None:
        pads = t.consts.value(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs(node).get("pads")
        if pads is None:
            t.freeze(layout, f"Pad {node.name} has pads that cannot be evaluated")
        elif any(int(pads[a]) or int(pads[a + layout.rank]) for a in layout.axes):
            t.freeze(layout, f"Pad {node.name} pads the channel axis")
    t.set_layout(node.output[0], layout)


@rule("Shape", "Size", "ConstantOfShape", "Constant", "Range", "NonZero", "ArgMax", "ArgMin", "TopK", "EyeLike")
def no_channels(t: "Tracer", node: onnx.NodeProto) -> None:
    for name in node.output:
        t.set_layout(name, None)


@rule("Expand", "Tile")
def expand(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    shape = t.shape(node.output[0])
    if layout is not None and shape is not None and len(shape) == layout.rank:
        t.set_layout(node.output[0], layout)
        return
    if layout is not None:
        t.freeze(layout, f"{node.op_type} {node.name} changes the rank of a channel tensor")
    t.set_layout(node.output[0], None)


# The rules for ops that only move channels live in their own module; importing it registers them.
from graphs import layout_rules  # noqa: E402,F401
