"""Predict a Plan's latency from the tables, before building the model.

`additive` is SP-LAMP eq. 6-7: every narrowed group and removed block contributes the saving
its table entry measured, independently. That over-counts where two changes touch one layer: a
conv between groups A and B costs ~ width(A) x width(B), so narrowing both saves less than the
sum of the two single-group savings, and a removed block's layers are counted again in the group
savings. `corrected` adds those overlaps back, sized by each layer's share of the MACs and a
latency-per-MAC factor fitted to the same tables (no extra measurement). bench/lut_accuracy.py
measures both against real pruned models.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphs.blocks import Block
from graphs.deps import Analysis
from graphs.stats import macs_per_node
from toolchain.latency.lut import Table


@dataclass
class Prediction:
    additive: float  # latency ratio to the unpruned model
    corrected: float

    def ms(self, table: Table) -> float:
        return self.corrected * table.base_ms


@dataclass
class LayerMap:
    """For each MAC-carrying node: its share of the MACs and the groups of its input/output channels."""

    share: dict[str, float]
    in_group: dict[str, str | None]
    out_group: dict[str, str | None]

    @classmethod
    def build(cls, analysis: Analysis) -> "LayerMap":
        macs = macs_per_node(analysis.model, analysis.shapes)
        total = float(sum(macs.values())) or 1.0
        roots = np.array([analysis.sets.find(i) for i in range(len(analysis.sets.parent))])
        group_of_root = {int(r): g.id for g in analysis.groups for r in g.classes}
        in_group: dict[str, str | None] = {}
        out_group: dict[str, str | None] = {}
        for sl in analysis.slices:
            if sl.role in ("in", "out") and sl.node in macs:
                gid = group_of_root.get(int(roots[sl.ids[0]]))
                (in_group if sl.role == "in" else out_group)[sl.node] = gid
        return cls({n: m / total for n, m in macs.items()}, in_group, out_group)


def _fractions(analysis: Analysis, kept: dict[str, int]) -> dict[str, float]:
    return {g.id: kept[g.id] / g.channels for g in analysis.groups if g.id in kept}


def mac_saving(layers: LayerMap, fractions: dict[str, float], removed_nodes: set[str] = frozenset()) -> float:
    """Fraction of MACs saved when groups keep `fractions` of their width and some nodes are removed."""
    saved = 0.0
    for node, share in layers.share.items():
        if node in removed_nodes:
            saved += share
            continue
        gi, go = layers.in_group.get(node), layers.out_group.get(node)
        saved += share * _layer_saving(fractions.get(gi, 1.0), fractions.get(go, 1.0), gi is not None and gi == go)
    return saved


def _layer_saving(r_in: float, r_out: float, one_group: bool) -> float:
    # A layer whose input and output are one group (depthwise) costs ~ its width, not width squared.
    return 1.0 - r_out if one_group else 1.0 - r_in * r_out


def latency_per_mac(table: Table, analysis: Analysis, layers: LayerMap) -> float:
    """Least-squares slope of measured single-group savings against their MAC savings."""
    xs, ys = [], []
    for gid, samples in table.groups.items():
        width = table.widths[gid]
        for k, ratio in samples.items():
            xs.append(mac_saving(layers, {gid: k / width}))
            ys.append(1.0 - ratio)
    xs, ys = np.asarray(xs), np.asarray(ys)
    return float(xs @ ys / (xs @ xs)) if xs.size and xs @ xs > 0 else 1.0


def predict(table: Table, analysis: Analysis, kept: dict[str, int], removed: list[Block],
            layers: LayerMap | None = None, alpha: float | None = None) -> Prediction:
    """Latency ratio of a plan that keeps kept[gid] units per group and removes `removed` blocks."""
    layers = layers or LayerMap.build(analysis)
    alpha = latency_per_mac(table, analysis, layers) if alpha is None else alpha
    additive = 1.0 + sum(table.group_ratio(g, k) - 1.0 for g, k in kept.items()) \
        + sum(table.block_ratio(b.id) - 1.0 for b in removed)
    fractions = _fractions(analysis, kept)
    removed_nodes = {n for b in removed for n in b.nodes}
    overlap = 0.0
    for node, share in layers.share.items():
        gi, go = layers.in_group.get(node), layers.out_group.get(node)
        r_in, r_out = fractions.get(gi, 1.0), fractions.get(go, 1.0)
        if node in removed_nodes:
            # The block's entry already counts this layer whole; the group entries counted it too.
            counted = _layer_saving(r_in, r_out, True) if gi == go else (1.0 - r_in) + (1.0 - r_out)
            overlap += share * counted
        elif gi != go and gi is not None and go is not None:
            overlap += share * (1.0 - r_in) * (1.0 - r_out)
    return Prediction(additive=additive, corrected=additive + alpha * overlap)
