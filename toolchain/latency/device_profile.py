"""A device's profile: time per MAC by op class, learned from every table measured on the device.

The per-layer model (predict.py) fits one efficiency per MAC-carrying layer: its share of the
latency per share of the MACs. Times the model's base latency over its MACs, that is an absolute
time per MAC on this device and backend, which carries over to another model: a 1x1 conv at 28x28
runs about as fast per MAC in any ResNet. Each profiled model writes its per-class figures into the
store (`device_profile`, one row per model and class); a model never profiled reads the other
models' rows back as the prior of its own fit, so its anchors (plus a few chosen entries) suffice.

Classes are op kind x output size (conv-1x1/28, conv-dw/14, dense/1, ...), with fallbacks to the
kind alone and to every MAC; `per-op` is the fixed cost of one graph op (the model's per-op term).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from graphs.deps import Analysis
from graphs.stats import macs_per_node
from toolchain.latency.store import Store

PER_OP = "per-op"
ALL = "all"
# Relative spread of a class's time per MAC when only one model measured it (between models it is
# computed): resnet18 vs resnet50 differed by 20-40% on the classes they share.
DEFAULT_SPREAD = 0.35
MAX_EFFICIENCY = 4.0
MIN_CLASS_SHARE = 0.05  # of the source model's MACs, for a class's figure to be used
FLOOR_SHARE = 0.2  # no layer's prior below this fraction of the all-class figure
FALLBACK_SPREAD = 0.5  # a layer whose class no other model had takes its kind's or every class's figure


def _size_class(hw: int) -> str:
    """Output side length, bucketed by powers of two (112, 56, 28, 14, 7 and 1 for dense layers)."""
    side = math.sqrt(max(hw, 1))
    return str(2 ** int(round(math.log2(side)))) if side >= 2 else "1"


def op_classes(analysis: Analysis) -> dict[str, tuple[str, str]]:
    """MAC-carrying node -> (op kind, kind/size class)."""
    dims = {i.name: tuple(i.dims) for i in analysis.model.graph.initializer}
    out = {}
    for node in analysis.model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = dims.get(node.input[1]) or analysis.shapes.get(node.input[1]) or ()
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            shape = analysis.shapes.get(node.output[0]) or ()
            hw = int(np.prod([d or 1 for d in shape[2:]])) if len(shape) > 2 else 1
            cin = (w[1] * group) if len(w) > 1 else 0
            if group > 1 and group == cin:
                kind = "conv-dw"
            elif group > 1:
                kind = "conv-grouped"
            else:
                kind = "conv-1x1" if len(w) > 2 and all(d == 1 for d in w[2:]) else "conv-kxk"
            out[node.name] = (kind, f"{kind}/{_size_class(hw)}")
        elif node.op_type in ("Gemm", "MatMul"):
            out[node.name] = ("dense", "dense/1")
    return out


def device_where(device: dict, config) -> dict:
    """The device profile's key: what makes time per MAC comparable between models."""
    return {"backend": config.backend, "device": device["device"], "precision": config.precision,
            "batch": config.batch, "runtime_version": f"{device['runtime']} {device['runtime_version']}"}


def learned_rows(analysis: Analysis, nodes: list[str], efficiency: np.ndarray, base_ms: float,
                 entries: int) -> dict[str, tuple[float, float, int]]:
    """One model's contribution: class -> (ms per GMAC or per op, units, single entries behind it)."""
    macs = macs_per_node(analysis.model, analysis.shapes)
    total = float(sum(macs.values())) or 1.0
    classes = op_classes(analysis)
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for node, e in zip(nodes, efficiency[:-1]):
        kind, cls = classes.get(node, (ALL, ALL))
        ms = e * base_ms / total * 1e9  # share of the latency per share of the MACs -> ms per GMAC
        for name in {cls, kind, ALL}:
            sums[name][0] += ms * macs[node]
            sums[name][1] += macs[node]
    rows = {name: (s / units, units, entries) for name, (s, units) in sums.items() if units > 0}
    ops = len(analysis.model.graph.node) or 1
    rows[PER_OP] = (float(efficiency[-1]) * base_ms / ops, float(ops), entries)
    return rows


def learn(store: Store, where: dict, sha: str, analysis: Analysis, predictor, entries: int) -> None:
    """Write this model's fitted efficiencies into the device profile (replacing its older rows)."""
    if entries < 1 or not math.isfinite(predictor.table.base_ms):
        return  # nothing measured beyond the anchors: the fit would only echo its prior
    store.put_profile(where, sha, learned_rows(analysis, list(predictor.layers.share), predictor.efficiency,
                                               predictor.table.base_ms, entries))


def _pooled(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Class -> (time per unit, relative spread), pooled over models, weighted by their entries."""
    by_class: dict[str, list[tuple[float, float]]] = defaultdict(list)
    totals = {r["model_sha256"]: r["units"] for r in rows if r["op_class"] == ALL}
    for r in rows:
        # A class with a sliver of a model's MACs is one or two layers' fit (NNLS sets some to 0):
        # too little to speak for the class on another model.
        if r["op_class"] in (ALL, PER_OP) or r["units"] >= MIN_CLASS_SHARE * totals.get(r["model_sha256"], 0.0):
            by_class[r["op_class"]].append((r["ms_per_unit"], float(r["entries"])))
    pooled = {}
    for cls, values in by_class.items():
        ms, w = np.array(values).T
        mean = float(ms @ w / w.sum())
        spread = float(np.sqrt(((ms - mean) ** 2) @ w / w.sum()) / mean) if len(ms) > 1 and mean > 0 else DEFAULT_SPREAD
        pooled[cls] = (mean, float(np.clip(spread, 0.1, 0.6)))
    return pooled


def device_prior(store: Store, where: dict, sha: str, analysis: Analysis, base_ms: float
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-node efficiency prior for this model from the other models' rows, and its relative spread.

    Empty when no other model was profiled on this device (the fit then falls back to one
    network-wide factor). Keys are node names plus `per-op`."""
    pooled = _pooled(store.profile_rows(where, exclude_model=sha))
    if ALL not in pooled or not math.isfinite(base_ms) or base_ms <= 0:
        return {}, {}
    macs = macs_per_node(analysis.model, analysis.shapes)
    total = float(sum(macs.values())) or 1.0
    prior, spread = {}, {}
    floor = FLOOR_SHARE * pooled[ALL][0] * total / 1e9 / base_ms
    for node, (kind, cls) in op_classes(analysis).items():
        if node not in macs:
            continue
        name = next(c for c in (cls, kind, ALL) if c in pooled)
        ms, rel = pooled[name]
        if name != cls:  # another class's figure: held loosely
            rel = max(rel, FALLBACK_SPREAD)
        # ms per GMAC -> this model's share of latency per share of MACs; capped, since a tiny layer's
        # fitted efficiency can carry another model's overhead (resnet20's fc: 100x its MAC share)
        prior[node] = min(max(ms * total / 1e9 / base_ms, floor), MAX_EFFICIENCY)
        spread[node] = rel
    if PER_OP in pooled:
        ops = len(analysis.model.graph.node) or 1
        prior[PER_OP] = pooled[PER_OP][0] * ops / base_ms
        spread[PER_OP] = pooled[PER_OP][1]
    return prior, spread
