"""Channel rules for ops that move channels between tensors and positions without computing on
them: Concat, Split, Slice, Reshape/Flatten (channel shuffle, flatten->Gemm), Transpose,
Squeeze/Unsqueeze. Registered in graphs.rules.RULES like every rule."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from graphs.channels import Fix, Layout
from graphs.rules import attrs, rule
from graphs.runtime_shapes import freeze_foreign_channel_counts

if TYPE_CHECKING:
    from graphs.deps import Tracer


def _input_layout(t: "Tracer", node: onnx.NodeProto) -> Layout | None:
    """The first input's layout; when it is untracked, so is every output (the rule has nothing to map)."""
    layout = t.layout(node.input[0])
    if layout is None:
        for name in node.output:
            t.set_layout(name, None)
    return layout


@rule("Concat")
def concat(t: "Tracer", node: onnx.NodeProto) -> None:
    layouts = [t.layout(name) for name in node.input]
    known = [l for l in layouts if l is not None]
    if not known:
        t.set_layout(node.output[0], None)
        return
    rank = known[0].rank
    axis = attrs(node)["axis"] % rank
    if all(len(l.axes) == 1 and l.inner == 1 and l.axis == axis for l in known):
        parts = []
        for name, layout in zip(node.input, layouts):
            if layout is None:  # a constant or untracked tensor joins the channel axis: never pruned
                width = t.channels_of(name, axis)
                layout = t.new_space(node, width, rank=rank, axis=axis, frozen=f"Concat {node.name} joins an untracked tensor")
            parts.append(layout.ids)
        t.set_layout(node.output[0], Layout(np.concatenate(parts), (axis,), rank))
        return
    if all(l.axes == known[0].axes and l.ids.shape == known[0].ids.shape for l in known) and axis not in known[0].axes:
        for other in known[1:]:
            t.sets.union(known[0].ids, other.ids)
        for name, layout in zip(node.input, layouts):
            if layout is None:
                t.broadcast_operand(name, known[0], rank, node)
        t.set_layout(node.output[0], known[0])
        return
    for layout in known:
        t.freeze(layout, f"Concat {node.name} mixes channel layouts")
    t.set_layout(node.output[0], None)


def _split_outputs(t: "Tracer", node: onnx.NodeProto, layout: Layout, bounds: list[tuple[int, int]]) -> None:
    for name, (start, stop) in zip(node.output, bounds):
        t.set_layout(name, layout.moved(ids=layout.ids[start:stop]))


@rule("Split")
def split(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = _input_layout(t, node)
    if layout is None:
        return
    axis = attrs(node).get("axis", 0) % layout.rank
    if axis not in layout.axes:
        for name in node.output:
            t.set_layout(name, layout)
        return
    if len(layout.axes) != 1 or layout.inner != 1:
        t.freeze(layout, f"Split {node.name} cuts a reshaped channel axis")
        for name in node.output:
            t.set_layout(name, None)
        return
    sizes = t.consts.value(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs(node).get("split")
    n = layout.ids.size
    parts = len(node.output)
    if sizes is None or len(set(int(s) for s in sizes)) == 1:
        # An equal split (torch.chunk) is recomputed from the run-time width: parts must stay equal.
        sizes = [n // parts] * parts
        t.tie_equal_parts(layout.ids, parts)
    else:
        # Unequal sizes come from a list in the model's code, which pruning cannot rewrite.
        t.freeze(layout, f"Split {node.name} has sizes {list(map(int, sizes))} fixed in the model code")
    bounds = np.cumsum([0, *[int(s) for s in sizes]])
    _split_outputs(t, node, layout, list(zip(bounds[:-1], bounds[1:])))
    if len(node.input) > 1 and node.input[1]:
        t.fixes.append(Fix("split_sizes", node.name, [layout.ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]))


@rule("Slice")
def slice_(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = _input_layout(t, node)
    if layout is None:
        return
    values = [t.consts.value(name) if i < len(node.input) and name else None for i, name in enumerate(node.input)]
    starts, ends = values[1], values[2]
    axes = values[3] if len(values) > 3 and values[3] is not None else (None if len(node.input) > 3 and node.input[3] else np.arange(len(starts) if starts is not None else 0))
    steps = values[4] if len(values) > 4 and values[4] is not None else None
    if starts is None or ends is None or axes is None:
        t.freeze(layout, f"Slice {node.name} has bounds that cannot be evaluated")
        t.set_layout(node.output[0], None)
        return
    axes = [int(a) % layout.rank for a in np.atleast_1d(axes)]
    if layout.axis not in axes:
        t.set_layout(node.output[0], layout)
        return
    k = axes.index(layout.axis)
    step = int(steps[k]) if steps is not None else 1
    n = layout.ids.size
    if len(layout.axes) != 1 or layout.inner != 1 or step != 1:
        t.freeze(layout, f"Slice {node.name} cuts the channel axis in a way compress does not track")
        t.set_layout(node.output[0], None)
        return
    start, stop = slice(int(np.atleast_1d(starts)[k]), int(np.atleast_1d(ends)[k])).indices(n)[:2]
    static = all(t.initializer(node.input[i]) is not None for i in (1, 2))
    if static:
        t.fixes.append(Fix("slice_bounds", node.name, [layout.ids], {"axis_index": k, "start": start, "stop": stop}))
    elif (start, stop) in ((0, n // 2), (n // 2, n)) and n % 2 == 0:
        t.tie_equal_parts(layout.ids, 2)  # bounds computed as C/2 at run time (torch.chunk)
    else:
        t.freeze(layout, f"Slice {node.name} has computed bounds that are not a half split")
    t.set_layout(node.output[0], layout.moved(ids=layout.ids[start:stop]))


@rule("Reshape", "Flatten")
def reshape(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    if node.op_type == "Reshape":
        freeze_foreign_channel_counts(t, node, layout)
    if layout is None:
        t.set_layout(node.output[0], None)
        return
    in_shape = t.concrete_shape(node.input[0])
    if in_shape is not None:  # channel dims come from the layout (inference may have lost them)
        for axis, width in zip(layout.axes, layout.ids.shape):
            in_shape[axis] = width
        in_shape[layout.axes[-1]] *= layout.inner
    if node.op_type == "Flatten":
        axis = attrs(node).get("axis", 1) % max(layout.rank, 1)
        out_shape = None if in_shape is None else [int(np.prod(in_shape[:axis])), int(np.prod(in_shape[axis:]))]
    else:
        target = t.consts.value(node.input[1])
        out_shape = None
        if target is not None and in_shape is not None:
            target = [int(v) for v in target]
            target = [in_shape[i] if v == 0 else v for i, v in enumerate(target)]
            if -1 in target:
                known = int(np.prod([v for v in target if v != -1]))
                target[target.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
            out_shape = target
    new = reshaped_layout(layout, in_shape, out_shape, t)
    if new is None:
        t.freeze(layout, f"{node.op_type} {node.name} mixes the channel axis with other axes")
    elif node.op_type == "Reshape" and t.initializer(node.input[1]) is not None and new is not layout:
        t.fixes.append(Fix("reshape_shape", node.name, [layout.ids], {"out_axes": new.axes, "ids_shape": new.ids.shape}))
    t.set_layout(node.output[0], new)


def reshaped_layout(layout: Layout, in_shape, out_shape, t: "Tracer") -> Layout | None:
    """The channel layout after a reshape, for the patterns CNNs use; None when channels get mixed."""
    if in_shape is None or out_shape is None:
        return None
    first, last = layout.axes[0], layout.axes[-1]
    before = int(np.prod(in_shape[:first]))
    span = int(np.prod(in_shape[first:last + 1]))
    after = int(np.prod(in_shape[last + 1:]))
    prefix = np.cumprod([1, *out_shape])
    if before not in prefix:
        return None
    start = int(np.where(prefix == before)[0][-1]) if before != 1 else int(np.where(prefix == before)[0][0])
    # Smallest run of output axes from `start` that covers the channel span (plus trailing dims if merged).
    for stop in range(start + 1, len(out_shape) + 1):
        covered = int(prefix[stop] // prefix[start])
        if covered == span and layout.inner == 1:
            dims = out_shape[start:stop]
            ids_count = layout.ids.size
            if len(dims) == 1:
                return Layout(layout.ids.ravel(), (start,), len(out_shape))
            if int(np.prod(dims)) == ids_count:  # channel axis split into (g, C/g): a shuffle or grouping
                grid = layout.ids.ravel().reshape(dims)
                for j in np.ndindex(*dims[1:]):
                    t.sets.union_all(grid[(slice(None), *j)])  # every row keeps the same columns
                return Layout(grid, tuple(range(start, stop)), len(out_shape))
            return None
        if covered == span * after and len(layout.axes) == 1 and stop == start + 1:
            # Flatten C x H x W (x ...) into one feature axis.
            return Layout(layout.ids.ravel(), (start,), len(out_shape), inner=layout.inner * after)
        if covered > span * after:
            break
    if layout.inner > 1 and len(layout.axes) == 1:
        # Un-flatten [N, C*HW] back to [N, C, H, W].
        channels = layout.ids.size
        for stop in range(start + 1, len(out_shape) + 1):
            if out_shape[start] == channels and int(prefix[-1] // prefix[start + 1]) == layout.inner:
                return Layout(layout.ids, (start,), len(out_shape))
    return None


@rule("Transpose")
def transpose(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = _input_layout(t, node)
    if layout is None:
        return
    perm = attrs(node).get("perm", list(range(layout.rank))[::-1])
    new_axes = [perm.index(a) for a in layout.axes]
    order = np.argsort(new_axes)
    axes = tuple(sorted(new_axes))
    if axes != tuple(range(axes[0], axes[0] + len(axes))) or layout.inner != 1:
        t.freeze(layout, f"Transpose {node.name} separates the channel axes")
        t.set_layout(node.output[0], None)
        return
    t.set_layout(node.output[0], layout.moved(ids=np.transpose(layout.ids, order), axes=axes))


@rule("Squeeze", "Unsqueeze")
def squeeze(t: "Tracer", node: onnx.NodeProto) -> None:
    layout = t.layout(node.input[0])
    out_shape = t.shape(node.output[0])
    if layout is None or out_shape is None:
        if layout is not None:
            t.freeze(layout, f"{node.op_type} {node.name} output shape is unknown")
        t.set_layout(node.output[0], None)
        return
    axes = t.consts.value(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs(node).get("axes")
    if axes is None:
        t.freeze(layout, f"{node.op_type} {node.name} has unknown axes")
        t.set_layout(node.output[0], None)
        return
    if node.op_type == "Squeeze":
        removed = sorted(int(a) % layout.rank for a in np.atleast_1d(axes))
        if any(a in layout.axes for a in removed):
            t.set_layout(node.output[0], None)  # squeezing a width-1 channel axis: nothing left to track
            return
        new_axes = tuple(a - sum(r < a for r in removed) for a in layout.axes)
    else:
        added = sorted(int(a) % len(out_shape) for a in np.atleast_1d(axes))
        new_axes = list(layout.axes)
        for a in added:
            new_axes = [x + 1 if x >= a else x for x in new_axes]
        new_axes = tuple(new_axes)
    t.set_layout(node.output[0], layout.moved(axes=new_axes, rank=len(out_shape)))
