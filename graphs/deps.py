"""Channel dependency groups of an ONNX graph: which channels must be pruned together, and why not.

`analyze(model)` traces every node in topological order through the op rules (graphs/rules.py),
then reads the groups off the channel union-find:
- a *class* is a set of channels that are pruned as one unit (channel i of every conv feeding one
  residual stream; the two channels a channel shuffle interleaves);
- a *group* is a set of producers linked by any class; its id is the torch module name of its
  first producer in topological order (`layer1.0.conv1`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import onnx

from graphs.channels import ChannelSets, Fix, Layout, ParamSlice
from graphs.onnx_io import constants_to_initializers, model_input_shape
from graphs.rules import RULES
from graphs.shapes import SYMBOLIC_DIM, ConstEvaluator, tensor_shapes


def module_of_node(node_name: str) -> str:
    """Torch module scope from a legacy-exporter node name: '/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1'."""
    if not node_name.startswith("/"):
        return ""
    parts = node_name.strip("/").split("/")[:-1]
    path: list[str] = []
    previous = None
    for part in parts:
        # Children of containers are written '<parent>.<index>' after the parent's own component.
        if previous is not None and part.startswith(previous + "."):
            path.append(part[len(previous) + 1:])
        else:
            path.append(part)
        previous = part
    return ".".join(path)


def module_of_param(init_name: str) -> str:
    return init_name.rsplit(".", 1)[0] if "." in init_name else init_name


@dataclass
class Space:
    """Channels created by one producer (a conv's filters, a graph input, an untracked op)."""

    ids: np.ndarray
    node: str
    module: str
    frozen: str | None = None


@dataclass
class Group:
    id: str
    channels: int  # prunable units (classes); usually the producers' width
    prunable: bool
    reason: str
    members: list[str]
    multiplicity: int  # channels per unit in the narrowest producer (2 across a channel shuffle)
    classes: np.ndarray = field(repr=False, default=None)  # class roots, in channel order
    widths: dict = field(repr=False, default_factory=dict)  # producer module -> channel count
    producers: list = field(repr=False, default_factory=list)  # (module, unit indices it writes)
    nodes: list = field(repr=False, default_factory=list)  # the producers' node names (graph inputs: input names)

    def choose(self, scores: np.ndarray, k: int) -> np.ndarray:
        """The k best units by score, except that every producer keeps at least one unit (a concat
        branch narrowed to zero channels is not a network). Sorted unit indices.

        Exactly k where k units can cover every producer: a residual stream's producers all write
        every unit, so it keeps k however many blocks add into it (keeping at least one unit per
        producer made resnet56's 10-producer streams 10 wide when 8 were asked, off the CPU's
        8-channel block: ORT wraps each conv in layout reorders, and the model ran at about 1.2x the
        unpruned one's latency where 8 wide ran at 0.9x; bench/channel_alignment.py)."""
        order = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]
        kept = order[:k]
        for _, units in self.producers:
            units = set(units.tolist())
            if units & set(kept):
                continue
            for victim in reversed(kept):  # the weakest unit whose producers all keep another one
                if all(len(set(us.tolist()) & set(kept)) > 1 for _, us in self.producers if victim in us):
                    kept.remove(victim)
                    break
            kept.append(next(u for u in order if u in units))
        return np.array(sorted(kept), dtype=np.int64)

    def as_dict(self) -> dict:
        return {"id": self.id, "channels": self.channels, "prunable": self.prunable, "reason": self.reason,
                "members": self.members, "multiplicity": self.multiplicity}


class Tracer:
    """State shared by the op rules while the graph is traced."""

    def __init__(self, model: onnx.ModelProto, tie_grouped_sides: bool = True):
        self.model = model
        # A grouped conv with equal per-group widths in and out keeps the same positions on both
        # sides (rules.conv); off only to measure what that costs (bench/grouped_alignment.py).
        self.tie_grouped_sides = tie_grouped_sides
        self.shapes = tensor_shapes(model)
        self.consts = ConstEvaluator(model, self.shapes)
        self.inits = {init.name: init for init in model.graph.initializer}
        self.sets = ChannelSets()
        self.layouts: dict[str, Layout | None] = {}
        self.slices: list[ParamSlice] = []
        self.fixes: list[Fix] = []
        self.spaces: list[Space] = []

    # --- reading the graph
    def layout(self, name: str) -> Layout | None:
        return self.layouts.get(name)

    def shape(self, name: str):
        return self.shapes.get(name)

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def concrete_shape(self, name: str):
        shape = self.shapes.get(name)
        return None if shape is None else [SYMBOLIC_DIM if d is None else d for d in shape]

    def producer(self, name: str) -> onnx.NodeProto | None:
        return self.consts.producer.get(name)

    def initializer(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return self.consts.value(name)
        return None

    def channels_of(self, name: str, axis: int) -> int:
        shape = self.shapes.get(name)
        return int(shape[axis]) if shape is not None and shape[axis] is not None else 0

    # --- writing results
    def set_layout(self, name: str, layout: Layout | None) -> None:
        self.layouts[name] = layout
        shape = self.shapes.get(name)
        if layout is not None and shape is not None and len(shape) == layout.rank:
            # Shape inference loses widths after computed slices; the layout knows them.
            dims = list(shape)
            for axis, width in zip(layout.axes, layout.ids.shape):
                dims[axis] = int(width)
            dims[layout.axes[-1]] *= layout.inner
            self.shapes[name] = tuple(dims)

    def new_space(self, node: onnx.NodeProto, width: int, rank: int = 4, axis: int = 1,
                  frozen: str | None = None, weight: str | None = None) -> Layout:
        ids = self.sets.allocate(width)
        if weight is None:
            weight = node.input[1] if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1 else ""
        module = module_of_param(weight) if "." in weight else (module_of_node(node.name) or node.name)
        self.spaces.append(Space(ids, node.name, module, frozen))
        if frozen:
            self.sets.freeze(ids, frozen)
        out_rank = self.rank(node.output[0]) if node.output else None
        return Layout(ids, (axis,), out_rank or rank)

    def freeze(self, layout: Layout, reason: str) -> None:
        self.sets.freeze(layout.ids, reason)

    def slice_param(self, name: str, axis: int, ids: np.ndarray, role: str, node: onnx.NodeProto) -> None:
        if not name:
            return
        values = self.initializer(name)
        if values is None:
            return
        if values.ndim <= axis or values.shape[axis] != np.asarray(ids).size:
            if values.size > 1:
                self.sets.freeze(ids, f"{node.op_type} {node.name}: parameter {name} does not match the channel count")
            return
        self.slices.append(ParamSlice(name, axis, np.asarray(ids).ravel(), role, node.name))

    def slice_constant(self, name: str, layout: Layout, node: onnx.NodeProto) -> None:
        """A constant operand broadcast against `layout`: slice it along the channel axis if it has one."""
        self.broadcast_operand(name, layout, layout.rank, node)

    def broadcast_operand(self, name: str, layout: Layout, out_rank: int, node: onnx.NodeProto) -> None:
        shape = self.shapes.get(name)
        values = self.initializer(name)
        if values is not None:
            shape = values.shape
        if shape is None:
            self.freeze(layout, f"{node.op_type} {node.name}: operand {name} has an unknown shape")
            return
        shift = out_rank - len(shape)
        if len(layout.axes) != 1:
            dims = [shape[a - shift] if a - shift >= 0 else 1 for a in layout.axes]
            if any(d not in (1,) for d in dims):
                self.freeze(layout, f"{node.op_type} {node.name}: operand {name} spans a split channel axis")
            return
        axis = layout.axis - shift
        width = shape[axis] if axis >= 0 else 1
        if width == 1:
            return
        positions = layout.positions()
        if values is not None and width == positions.size:
            self.slices.append(ParamSlice(name, axis, positions, "param", node.name))
        else:
            self.freeze(layout, f"{node.op_type} {node.name}: operand {name} has channels that are not tracked")

    def tie_equal_parts(self, ids: np.ndarray, parts: int) -> None:
        """An equal split computed from the run-time width: keep position i of every part alike."""
        grid = np.asarray(ids).ravel().reshape(parts, -1)
        for j in range(grid.shape[1]):
            self.sets.union_all(grid[:, j])

    # --- the trace
    def run(self) -> None:
        graph = self.model.graph
        for inp in graph.input:
            shape = self.shapes.get(inp.name)
            if shape is None or len(shape) < 2 or shape[1] is None:
                self.layouts[inp.name] = None
                continue
            ids = self.sets.allocate(shape[1])
            self.spaces.append(Space(ids, inp.name, inp.name, "graph input"))
            self.sets.freeze(ids, "graph input")
            self.layouts[inp.name] = Layout(ids, (1,), len(shape))
        for node in graph.node:
            rule = RULES.get(node.op_type)
            if rule is None or node.domain not in ("", "ai.onnx"):
                self._unknown(node)
            else:
                rule(self, node)
        for out in graph.output:
            layout = self.layouts.get(out.name)
            if layout is not None:
                self.freeze(layout, "graph output")

    def _unknown(self, node: onnx.NodeProto) -> None:
        for name in node.input:
            layout = self.layouts.get(name)
            if layout is not None:
                self.freeze(layout, f"unsupported op {node.op_type} ({node.name})")
        for name in node.output:
            self.layouts[name] = None


@dataclass(eq=False)
class Analysis:
    """Everything derived from one model's graph, computed once and handed to every later stage."""

    model: onnx.ModelProto  # normalised copy (Constant nodes as initializers)
    groups: list[Group]
    slices: list[ParamSlice]
    fixes: list[Fix]
    sets: ChannelSets
    shapes: dict
    layouts: dict

    def group(self, group_id: str) -> Group:
        for group in self.groups:
            if group.id == group_id:
                return group
        raise KeyError(group_id)

    @cached_property
    def roots(self) -> np.ndarray:
        """The class (union-find root) of every channel id."""
        return channel_roots(self.sets)

    @cached_property
    def _group_by_root(self) -> dict[int, Group]:
        return {int(r): g for g in self.groups for r in np.asarray(g.classes).tolist()}

    def group_of(self, channel: int) -> Group | None:
        """The group channel id `channel` belongs to (None: a channel no group holds)."""
        return self._group_by_root.get(int(self.roots[channel]))

    @cached_property
    def blocks(self) -> list:
        """Removable blocks and layers, in topological order (graphs.blocks.Block)."""
        from graphs.blocks import removable_blocks  # blocks.py names modules with this module's helpers

        return removable_blocks(self.model, self.shapes)

    @cached_property
    def not_removable(self) -> list:
        """Block-shaped modules that cannot be removed, with the reason (graphs.blocks.NotRemovable)."""
        from graphs.blocks import unremovable_modules

        return unremovable_modules(self.model, self.shapes, self.blocks)

    @cached_property
    def input_shape(self) -> list[int] | None:
        return model_input_shape(self.model)


def channel_roots(sets: ChannelSets) -> np.ndarray:
    return np.array([sets.find(i) for i in range(len(sets.parent))], dtype=np.int64)


def analyze(model: onnx.ModelProto, tie_grouped_sides: bool = True) -> Analysis:
    """Dependency groups of `model` (a normalised copy is kept in the result for surgery)."""
    normalised = onnx.ModelProto()
    normalised.CopyFrom(model)
    constants_to_initializers(normalised)
    tracer = Tracer(normalised, tie_grouped_sides)
    tracer.run()
    couple_shared_parameters(tracer)
    groups = _groups(tracer)
    return Analysis(normalised, groups, tracer.slices, tracer.fixes, tracer.sets, tracer.shapes, tracer.layouts)


def couple_shared_parameters(tracer: Tracer) -> None:
    """One initializer used by several nodes (a detection head applied to every FPN level) has one
    set of channels in torch: element j of a shared axis belongs to channel j of every node that reads
    it, so those channels are pruned together (or the parameter would be sliced two ways)."""
    by_axis: dict[tuple[str, int], ParamSlice] = {}
    for sl in tracer.slices:
        first = by_axis.setdefault((sl.init, sl.axis), sl)
        if first is sl:
            continue
        if first.ids.size == sl.ids.size:
            tracer.sets.union(first.ids, sl.ids)
        else:
            reason = f"{sl.init} is shared by {first.node} and {sl.node}, which map its axis {sl.axis} differently"
            tracer.sets.freeze(first.ids, reason)
            tracer.sets.freeze(sl.ids, reason)


def _groups(tracer: Tracer) -> list[Group]:
    sets = tracer.sets
    roots = channel_roots(sets)
    frozen_by_root: dict[int, str] = {}
    for i, reason in sets.frozen.items():
        frozen_by_root.setdefault(int(roots[i]), reason)

    members_by_root: dict[int, set[str]] = {}
    for sl in tracer.slices:
        for r in np.unique(roots[sl.ids]).tolist():
            members_by_root.setdefault(r, set()).add(module_of_param(sl.init))
    by_component = _space_components(tracer.spaces, roots)

    groups: list[Group] = []
    seen_ids: dict[str, int] = {}
    for component in sorted(by_component):
        spaces = [tracer.spaces[s] for s in by_component[component]]
        classes = np.unique(np.concatenate([roots[sp.ids] for sp in spaces]))
        if classes.size == 0:
            continue
        reasons = [frozen_by_root[r] for r in classes.tolist() if r in frozen_by_root]
        members: set[str] = set()
        for r in classes.tolist():
            members |= members_by_root.get(r, set())
        multiplicity = min(max(1, sp.ids.size // max(1, np.unique(roots[sp.ids]).size)) for sp in spaces)
        gid = spaces[0].module
        if gid in seen_ids:  # a module called twice produces two groups: keep ids unique
            seen_ids[gid] += 1
            gid = f"{gid}#{seen_ids[gid]}"
        else:
            seen_ids[gid] = 1
        widths = {sp.module: int(sp.ids.size) for sp in spaces if sp.frozen is None}
        producers = [(sp.module, np.unique(np.searchsorted(classes, roots[sp.ids]))) for sp in spaces]
        groups.append(Group(
            id=gid, channels=int(classes.size), prunable=not reasons, reason=reasons[0] if reasons else "",
            members=sorted(members | {sp.module for sp in spaces if sp.frozen is None}, key=_natural),
            multiplicity=multiplicity, classes=classes, widths=widths, producers=producers,
            nodes=[sp.node for sp in spaces],
        ))
    return groups


def _space_components(spaces: list[Space], roots: np.ndarray) -> dict[int, list[int]]:
    """Spaces linked by any shared class form one group: union-find over space indices, each
    component keyed by its smallest space index."""
    parent = list(range(len(spaces)))

    def find(s: int) -> int:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    first_space: dict[int, int] = {}
    for s, space in enumerate(spaces):
        for r in np.unique(roots[space.ids]).tolist():
            if r in first_space:
                a, b = find(s), find(first_space[r])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first_space[r] = s
    by_component: dict[int, list[int]] = {}
    for s in range(len(spaces)):
        by_component.setdefault(find(s), []).append(s)
    return by_component


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
