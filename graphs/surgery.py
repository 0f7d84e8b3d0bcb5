"""Apply a Plan to an ONNX graph with onnx-graphsurgeon: narrow channel groups, remove blocks.

The same edits are returned as `Edits` (by torch parameter name), so toolchain/sync.py applies
exactly what was applied here and the two models compute the same function.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphs.blocks import Block
from graphs.alignment import round_count
from graphs.deps import Analysis, analyze
from graphs.errors import InputError
from graphs.importance import l1_scores
from graphs.onnx_io import cap_ir_version, model_sha256
from graphs.plan import Plan


@dataclass
class Edits:
    """What surgery did, keyed by initializer (= torch parameter) name."""

    slices: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)  # name -> [(axis, kept)]
    conv_groups: dict[str, int] = field(default_factory=dict)  # conv weight name -> new `group`
    removed: list[str] = field(default_factory=list)  # torch modules that become the identity
    reinit: dict[str, np.ndarray] = field(default_factory=dict)  # weight name -> fresh values
    reinit_record: dict[str, dict] = field(default_factory=dict)  # module -> {"in_channels", "seed"} (Plan.reinit)
    kept: dict[str, list[int]] = field(default_factory=dict)  # group id -> kept unit indices
    notes: list[str] = field(default_factory=list)


def resolve_kept(analysis: Analysis, plan: Plan,
                 scores: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Kept unit indices for every group the plan narrows (validated), and notes for the user."""
    groups = {g.id: g for g in analysis.groups}
    kept, notes = {}, []
    for gid, spec in plan.channels.items():
        if gid not in groups:
            known = ", ".join(g.id for g in analysis.groups if g.prunable)[:200]
            raise InputError(f"plan names unknown channel group '{gid}' (prunable groups: {known})")
        group = groups[gid]
        if not group.prunable:
            raise InputError(f"group '{gid}' cannot be pruned: {group.reason}")
        if "keep" in spec:
            keep = np.array(sorted(set(spec["keep"])), dtype=np.int64)
            if keep.size == 0 or keep[0] < 0 or keep[-1] >= group.channels:
                raise InputError(f"channels['{gid}'].keep must hold 1 to {group.channels} indices in [0, {group.channels})")
            for module, units in group.producers:
                if not np.isin(units, keep).any():
                    raise InputError(f"channels['{gid}'].keep keeps no channel of {module}: every producer keeps one")
        else:
            count = spec["count"]
            if not 1 <= count <= group.channels:
                raise InputError(f"channels['{gid}'].count is {count}; group '{gid}' has {group.channels} channels")
            rounded = round_count(count, group.channels, group.multiplicity, plan.round_to)
            if group.channels * group.multiplicity < plan.round_to:
                notes.append(f"group '{gid}' ({group.channels} channels) is narrower than round_to={plan.round_to}: kept whole")
            if scores is None:
                scores = l1_scores(analysis)
            keep = group.choose(scores[gid], rounded)
        kept[gid] = keep
    return kept, notes


def apply_plan(model: onnx.ModelProto, plan: Plan, scores: dict[str, np.ndarray] | None = None,
               seed: int = 0, analysis: Analysis | None = None, check: bool = True) -> tuple[onnx.ModelProto, Edits]:
    """The pruned model and the edits made, or InputError when the plan does not fit the model.

    `check=False` skips shape inference and the checker: for the many throw-away candidates a latency
    table times, where onnxruntime's own load is the check.
    """
    expected = plan.model.get("onnx_sha256")
    if expected and expected != model_sha256(model):
        raise InputError("the plan was made for another model (onnx_sha256 differs)")
    analysis = analysis or analyze(model)
    blocks = {b.id: b for b in analysis.blocks}
    for bid in plan.remove:
        if bid not in blocks:
            known = ", ".join(blocks)[:200]
            raise InputError(f"plan names unknown block '{bid}' (removable: {known or 'none'})")
    roots = analysis.roots
    kept_units, notes = resolve_kept(analysis, plan, scores)
    edits = Edits(kept={gid: keep.tolist() for gid, keep in kept_units.items()}, notes=notes)

    keep_id = np.ones(len(roots), dtype=bool)
    for gid, keep in kept_units.items():
        classes = analysis.group(gid).classes
        dropped = np.setdiff1d(classes, classes[keep])
        keep_id &= ~np.isin(roots, dropped)

    graph = gs.import_onnx(analysis.model)
    tensors = graph.tensors()
    nodes = {node.name: node for node in graph.nodes}
    _slice_parameters(analysis, keep_id, tensors, edits)
    _apply_fixes(analysis, keep_id, nodes, edits)
    _remove_blocks(plan, blocks, analysis, keep_id, tensors, graph, edits, seed)

    for tensor in graph.tensors().values():  # stale shapes make strict inference fail: re-infer them
        if isinstance(tensor, gs.Variable) and tensor not in graph.inputs and tensor not in graph.outputs:
            tensor.shape = None
    # No toposort: removals only rewire consumers to earlier tensors, so the original order stays valid,
    # and keeping it keeps group ids (first producer in topological order) stable across prunings.
    graph.cleanup()
    pruned = gs.export_onnx(graph)
    pruned.ir_version = model.ir_version
    cap_ir_version(pruned)
    del pruned.metadata_props[:]
    pruned.metadata_props.extend(model.metadata_props)
    if check:
        pruned = onnx.shape_inference.infer_shapes(pruned)
        onnx.checker.check_model(pruned)
    return pruned, edits


def _slice_parameters(analysis: Analysis, keep_id: np.ndarray, tensors: dict, edits: Edits) -> None:
    done: dict[tuple[str, int], np.ndarray] = {}
    for sl in analysis.slices:
        idx = np.nonzero(keep_id[sl.ids])[0]
        if idx.size == sl.ids.size:
            continue
        key = (sl.init, sl.axis)
        if key in done:
            if not np.array_equal(done[key], idx):
                # Two groups keep different channels of one shared parameter: the plan cannot be applied.
                raise InputError(f"the plan slices {sl.init} (axis {sl.axis}) two different ways")
            continue
        done[key] = idx
        const = tensors[sl.init]
        const.values = np.take(np.asarray(const.values), idx, axis=sl.axis)
        edits.slices.setdefault(sl.init, []).append((sl.axis, idx))


def _replace_constant(node: gs.Node, position: int, values: np.ndarray) -> None:
    """Give one node its own copy of a (possibly shared) constant input."""
    node.inputs[position] = gs.Constant(f"{node.name}_input{position}_pruned", np.asarray(values))


def _apply_fixes(analysis: Analysis, keep_id: np.ndarray, nodes: dict, edits: Edits) -> None:
    for fix in analysis.fixes:
        node = nodes[fix.node]
        if fix.kind == "conv_groups":
            new = int(keep_id[fix.ids[0]].sum())
            if new != node.attrs.get("group", 1):
                node.attrs["group"] = new
                edits.conv_groups[node.inputs[1].name] = new
        elif fix.kind == "split_sizes":
            _replace_constant(node, 1, np.array([int(keep_id[ids].sum()) for ids in fix.ids], dtype=np.int64))
        elif fix.kind == "slice_bounds":
            kept = keep_id[fix.ids[0]]
            k = fix.extra["axis_index"]
            for position, bound in ((1, fix.extra["start"]), (2, fix.extra["stop"])):
                values = np.array(node.inputs[position].values, copy=True)
                values[k] = int(kept[:bound].sum())
                _replace_constant(node, position, values)
        elif fix.kind == "reshape_shape":
            target = np.array(node.inputs[1].values, copy=True)
            grid = keep_id[fix.ids[0]]
            old_total, new_total = grid.size, int(grid.sum())
            axes = fix.extra["out_axes"]
            if len(axes) == 1:
                if target[axes[0]] > 0:
                    target[axes[0]] = target[axes[0]] // old_total * new_total
            else:
                rows = fix.extra["ids_shape"][0]
                if target[axes[1]] > 0:
                    target[axes[1]] = new_total // rows
            _replace_constant(node, 1, target)


def _remove_blocks(plan: Plan, blocks: dict[str, Block], analysis: Analysis, keep_id: np.ndarray,
                   tensors: dict, graph: gs.Graph, edits: Edits, seed: int) -> None:
    chosen = [blocks[b] for b in blocks if b in set(plan.remove)]  # topological order
    for a in chosen:
        for b in chosen:
            if a is not b and set(a.nodes) & set(b.nodes):
                raise InputError(f"blocks '{a.id}' and '{b.id}' overlap: remove only one of them")
    by_exit = {b.exit: b for b in chosen}

    def live_entry(tensor: str) -> str:
        while tensor in by_exit:  # consecutive removed blocks: skip back to the first one's input
            tensor = by_exit[tensor].entry
        return tensor

    for block in chosen:
        entry, exit_ = tensors[live_entry(block.entry)], tensors[block.exit]
        for consumer in list(exit_.outputs):
            for position, tensor in enumerate(consumer.inputs):
                if tensor is exit_:
                    consumer.inputs[position] = entry
        if exit_ in graph.outputs:
            graph.outputs[graph.outputs.index(exit_)] = entry
        edits.removed.extend(block.members)
    removed_nodes = {n for b in chosen for n in b.nodes}

    def pruned_width(tensor: str) -> int:
        tensor = live_entry(tensor)
        layout = analysis_layout(analysis, tensor)
        return int(keep_id[layout].sum()) if layout is not None else int(analysis.shapes[tensor][1])

    rng = np.random.default_rng(seed)
    for block in chosen:
        if block.kind != "layer" or block.next_conv is None or block.next_conv in removed_nodes:
            continue
        weight = tensors[block.next_weight]
        width = pruned_width(block.entry)
        if weight.values.shape[1] == width:
            continue
        shape = (weight.values.shape[0], width, *weight.values.shape[2:])
        bound = 1.0 / np.sqrt(width * int(np.prod(shape[2:])))  # torch's default conv init
        weight.values = rng.uniform(-bound, bound, size=shape).astype(weight.values.dtype)
        edits.reinit[block.next_weight] = weight.values
        edits.reinit_record[block.next_weight.rsplit(".", 1)[0]] = {"in_channels": width, "seed": seed}


def analysis_layout(analysis: Analysis, tensor: str) -> np.ndarray | None:
    layout = analysis.layouts.get(tensor)
    return None if layout is None else layout.ids.ravel()
