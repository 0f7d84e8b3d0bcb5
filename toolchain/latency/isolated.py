"""HALP-style isolated-layer tables, kept for comparison with the whole-network tables.

HALP times each layer alone (one conv on its input shape) at each output width, and predicts a
plan as the sum of per-layer changes. It ignores what SP-LAMP eq. 7 captures: the layers coupled
to a group (consumers' input widths, residual partners) and where the layer sits in the network.
bench/lut_accuracy.py --isolated prints both predictors against measured pruned models.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from graphs.deps import Analysis
from graphs.onnx_io import cap_ir_version
from toolchain.latency.config import ProfileConfig, resolve_round_to
from toolchain.latency.grid import group_grid
from toolchain.latency.measure import interleaved_ratio


def single_conv_model(node: onnx.NodeProto, in_shape, weight_shape, out_channels: int) -> bytes:
    """One Conv with `node`'s attributes, input shape and kernel, narrowed to `out_channels` filters."""
    shape = [out_channels, *weight_shape[1:]]
    weight = helper.make_tensor("w", TensorProto.FLOAT, shape,
                                np.random.default_rng(0).standard_normal(int(np.prod(shape))).astype(np.float32))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    graph = helper.make_graph([conv], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return cap_ir_version(model).SerializeToString()


def isolated_table(analysis: Analysis, backend, config: ProfileConfig) -> dict[str, dict[int, float]]:
    """group id -> {k: ms saved} summed over the group's own convs timed alone (HALP's view)."""
    config = resolve_round_to(config, backend)
    nodes = {n.name: n for n in analysis.model.graph.node}
    weights = {i.name: tuple(i.dims) for i in analysis.model.graph.initializer}
    saved: dict[str, dict[int, float]] = {}
    for sl in analysis.slices:
        node = nodes.get(sl.node)
        if sl.role != "out" or node is None or node.op_type != "Conv" or sl.axis != 0:
            continue
        group = analysis.group_of(sl.ids[0])
        if group is None or not group.prunable or any(a.name == "group" and a.i != 1 for a in node.attribute):
            continue
        in_shape = [config.batch, *[d or 1 for d in analysis.shapes[node.input[0]][1:]]]
        full = weights[node.input[1]][0]
        with backend.prepare(single_conv_model(node, in_shape, weights[node.input[1]], full),
                             batch=config.batch) as reference:
            for k in group_grid(group, config.round_to, config.points):
                width = int(round(full * k / group.channels))
                with backend.prepare(single_conv_model(node, in_shape, weights[node.input[1]], width),
                                     batch=config.batch) as runner:
                    result = interleaved_ratio(runner, reference, warmup=config.warmup, runs=config.runs,
                                               pause_s=config.pause_s, target_se=None)
                entry = saved.setdefault(group.id, {})
                entry[k] = entry.get(k, 0.0) + result.reference.median * (1.0 - result.ratio)
    return saved


def predict_isolated(saved: dict[str, dict[int, float]], widths: dict[str, int], base_ms: float,
                     kept: dict[str, int]) -> float:
    """HALP-style latency ratio: sum of per-layer savings, interpolated between sampled widths."""
    total = 0.0
    for gid, k in kept.items():
        samples = saved.get(gid)
        if not samples:
            continue
        ks = sorted(samples) + [widths[gid]]
        total += float(np.interp(k, ks, [samples[x] for x in sorted(samples)] + [0.0]))
    return 1.0 - total / base_ms
