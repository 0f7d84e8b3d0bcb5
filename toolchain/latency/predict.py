"""Predict a Plan's latency from the tables, before building the model.

`additive` is SP-LAMP eq. 6-7: every narrowed group and removed block contributes the saving its
table entry measured, independently. That over-counts where two changes touch one layer: a conv
between groups A and B costs ~ width(A) x width(B), so narrowing both saves less than the sum of
the two single-group savings, and a removed block's layers are counted again in the group savings.

`corrected` is a per-layer cost model fitted to the same table entries, with no extra measurement:
each MAC-carrying layer saves `efficiency[layer] x its MAC share x its exact MAC saving`, where the
MAC saving of a conv between groups A and B is 1 - rA * rB (the overlap counted once) and a removed
layer saves all of its share. Every table entry is one linear equation in the efficiencies (a group
entry touches the layers on both sides of the group, a block entry the layers it removes); they are
solved by non-negative least squares, pulled (ridge) toward the single latency-per-MAC factor that
fits all entries, so a layer that no entry isolates keeps the network-wide factor. One more term,
fitted with them when it cuts the misfit by a fifth, charges a cost per op: removing a block also
removes its ops' fixed overhead, which is most of a small model's latency (resnet20 at 32x32:
halving a 16-wide group saved nothing, removing a block 7-15%) and of any model's on a launch-bound
GPU; where the single entries are too few to show it, the anchors decide (_fit). Non-negative
efficiencies make the prediction monotone: a narrower plan is never predicted slower.

A removed block saves what its own entry measured (one whose removal measured slower costs that;
the solvers never remove it), and the narrowed groups then save only on the layers that remain,
so nothing is counted twice (the efficiencies still use the block entries). The per-layer model
alone predicted removals badly where one efficiency per layer must serve both kinds of entry:
mobilenet_v2's half-depth anchor measured 0.887, the per-layer model said 0.793, the summed block
entries 0.876. Finally two scales are fitted to the table's anchors, measured in the same run: one
on the narrowed layers' savings (uniform plans that narrow every group at once), one on the blocks'
(plans that remove many blocks at once). bench/lut_accuracy.py measures both against real models.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from graphs.blocks import Block
from graphs.deps import Analysis
from graphs.stats import macs_per_node
from toolchain.latency.table import Table

# Ridge weight toward the network-wide factor. Features are MAC shares (summing to 1 over the
# network), so this is small against a whole-network entry and large against a noisy tiny layer.
RIDGE = 0.01
# Relative spread of a layer's efficiency around a network-wide prior (no device profile): the
# uncertainty that active selection (active.py) starts from.
PRIOR_SPREAD = 0.5


@dataclass
class Prediction:
    additive: float  # latency ratio to the unpruned model, SP-LAMP's sum of table entries
    corrected: float  # the fitted per-layer model's latency ratio


@dataclass
class LayerMap:
    """For each MAC-carrying node: its share of the MACs and the groups of its input/output channels."""

    share: dict[str, float]
    in_group: dict[str, str | None]
    out_group: dict[str, str | None]
    # Convs priced by their width, not their MACs (see _layer_saving): depthwise and grouped ones.
    by_width: frozenset[str] = frozenset()

    @classmethod
    def build(cls, analysis: Analysis) -> "LayerMap":
        macs = macs_per_node(analysis.model, analysis.shapes)
        total = float(sum(macs.values())) or 1.0
        in_group: dict[str, str | None] = {}
        out_group: dict[str, str | None] = {}
        for sl in analysis.slices:
            if sl.role in ("in", "out") and sl.node in macs:
                group = analysis.group_of(sl.ids[0])
                (in_group if sl.role == "in" else out_group)[sl.node] = group.id if group else None
        return cls({n: m / total for n, m in macs.items()}, in_group, out_group, _grouped(analysis.model))

    def savings(self, fractions: dict[str, float], removed_nodes=frozenset()) -> np.ndarray:
        """Per node (in `share` order): share x fraction of its cost saved (_layer_saving)."""
        out = np.empty(len(self.share))
        for i, (node, share) in enumerate(self.share.items()):
            if node in removed_nodes:
                out[i] = share
                continue
            gi, go = self.in_group.get(node), self.out_group.get(node)
            out[i] = share * _layer_saving(fractions.get(gi, 1.0), fractions.get(go, 1.0),
                                           node in self.by_width and gi == go)
        return out


def _grouped(model) -> frozenset[str]:
    """Convs with more than one group (depthwise ones included)."""
    return frozenset(n.name for n in model.graph.node
                     if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))


def _layer_saving(r_in: float, r_out: float, by_width: bool) -> float:
    """Fraction of a layer's cost saved: of its MACs for an ordinary layer (out x in widths), of its
    width for a grouped conv whose two sides narrow together. For a depthwise conv that is its MACs
    too (it loses whole groups). A grouped conv keeps its group count and narrows every group, so its
    MACs fall as r^2, but its time does not follow: ORT's grouped kernels at half the channels per
    group (a quarter of the MACs) ran regnet_y_800mf's convs at 0.88-1.00x
    (bench/results/grouped_alignment_sides.txt), and pricing them by MACs made regnet's predictions
    worse in an offline replay of bench/results/lut_regnet_precise.txt (worst 15.9% / 14.1% against
    12.9% / 13.0%; a scratch variant, not kept)."""
    return 1.0 - r_out if by_width else 1.0 - r_in * r_out


def mac_saving(layers: LayerMap, fractions: dict[str, float], removed_nodes=frozenset()) -> float:
    """Fraction of MACs saved when groups keep `fractions` of their width and some nodes are removed
    (grouped convs priced by width, see _layer_saving)."""
    return float(layers.savings(fractions, removed_nodes).sum())


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


class Predictor:
    """The table's two predictors for one analysed model; the per-layer fit is done once, here."""

    def __init__(self, table: Table, analysis: Analysis, blocks: list[Block] | None = None, ridge: float = RIDGE):
        self.table, self.analysis = table, analysis
        self.layers = LayerMap.build(analysis)
        self.alpha = latency_per_mac(table, analysis, self.layers)
        if blocks is None and (table.blocks or any(a.removed for a in table.anchors.values())):
            blocks = analysis.blocks
        self.blocks = {b.id: b for b in blocks or []}
        self.prior, self.prior_spread = self._prior()
        self.efficiency, self.fit_rms = self._fit(self.blocks, ridge)
        self.anchor_scale, self.depth_scale = self._calibrate()
        self.floor = latency_floor(table)

    def _prior(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer efficiencies the fit is pulled toward, and their relative spread.

        The device profile's, where the table carries one (device_profile.py); else the network-wide
        latency per MAC for every layer and no per-op overhead, loosely held."""
        nodes = list(self.layers.share)
        if self.table.prior:
            prior = np.array([self.table.prior.get(n, self.alpha) for n in nodes] + [self.table.prior.get("per-op", 0.0)])
            spread = [self.table.prior_spread.get(n, PRIOR_SPREAD) for n in nodes] + \
                [self.table.prior_spread.get("per-op", PRIOR_SPREAD)]
            prior[:-1] *= self._prior_level(np.maximum(prior, 0.0))
            return np.maximum(prior, 0.0), np.array(spread)
        return (np.append(np.full(len(nodes), max(self.alpha, 0.0)), 0.0),
                np.full(len(nodes) + 1, PRIOR_SPREAD))

    def _prior_level(self, prior: np.ndarray) -> float:
        """One factor on the device profile's efficiencies that meets this model's width anchors.

        The profile carries how op classes compare on the device; the overall level (how much of this
        model's time is per-call overhead, what the host's load did to this table) is the model's own:
        mobilenet_v2's time per MAC, taken as is, put resnet18's anchors-only predictions 60% off."""
        anchors = [a for a in self.table.anchors.values() if a.kept and not a.removed]
        predicted = np.array([self._parts(a.kept)[0] @ prior for a in anchors])
        measured = np.array([1.0 - a.ratio for a in anchors])
        return _mean_ratio(predicted, measured, 0.1, 10.0)

    def features(self, kept: dict[str, int], removed_nodes=frozenset()) -> np.ndarray:
        """The saving's features (per-layer MAC savings, then the fraction of ops removed): the
        predicted saving of a single entry is `features @ efficiency`."""
        return self._features(kept, removed_nodes)

    def parts(self, kept: dict[str, int], removed_nodes=frozenset()) -> tuple[np.ndarray, np.ndarray]:
        """The features of the narrowed layers and of the removed ones, apart."""
        return self._parts(kept, removed_nodes)

    def _fractions(self, kept: dict[str, int]) -> dict[str, float]:
        return {gid: k / self.table.widths[gid] for gid, k in kept.items()}

    def _parts(self, kept: dict[str, int], removed_nodes=frozenset()) -> tuple[np.ndarray, np.ndarray]:
        """Features of the narrowed layers and of the removed ones: per-layer MAC savings, then the
        fraction of the graph's ops removed (per-op overhead, depth only)."""
        ops = len(self.analysis.model.graph.node) or 1
        saved = self.layers.savings(self._fractions(kept), removed_nodes)
        gone = np.array([n in removed_nodes for n in self.layers.share], dtype=bool)
        return (np.append(np.where(gone, 0.0, saved), 0.0),
                np.append(np.where(gone, saved, 0.0), len(removed_nodes) / ops))

    def _features(self, kept: dict[str, int], removed_nodes=frozenset()) -> np.ndarray:
        width, depth = self._parts(kept, removed_nodes)
        return width + depth

    def _entries(self, blocks: dict[str, Block]) -> tuple[np.ndarray, np.ndarray, int]:
        """Feature rows and measured savings: the single-change entries first (their count returned),
        then the anchors whose blocks are known."""
        rows, savings = [], []
        for gid, samples in self.table.groups.items():
            for k, ratio in samples.items():
                rows.append(self._features({gid: k}))
                savings.append(1.0 - ratio)
        for bid, ratio in self.table.blocks.items():
            if bid in blocks:
                rows.append(self._features({}, set(blocks[bid].nodes)))
                savings.append(1.0 - ratio)
        singles = len(rows)
        for anchor in self.table.anchors.values():
            if all(b in blocks for b in anchor.removed):
                rows.append(self._features(anchor.kept, {n for b in anchor.removed for n in blocks[b].nodes}))
                savings.append(1.0 - anchor.ratio)
        return np.array(rows).reshape(len(rows), len(self.layers.share) + 1), np.array(savings), singles

    def _fit(self, blocks: dict[str, Block], ridge: float) -> tuple[np.ndarray, float]:
        x_all, y_all, singles = self._entries(blocks)
        n = len(self.layers.share) + 1
        prior = self.prior
        self.outliers = 0
        if not len(y_all):
            return prior.copy(), 0.0
        # The pull is sized by each layer's share: it decides only what the entries leave open.
        shares = np.array(list(self.layers.share.values()))
        scale = np.sqrt(ridge) * np.append(shares, shares.mean())

        def fit(per_op: bool, rows: int) -> tuple[np.ndarray, np.ndarray, float]:
            x, y = x_all[:rows], y_all[:rows]

            def solve(keep: np.ndarray) -> np.ndarray:
                cols = x[keep] if per_op else np.column_stack([x[keep][:, :-1], np.zeros(int(keep.sum()))])
                return nnls(np.vstack([cols, np.diag(scale)]), np.concatenate([y[keep], scale * prior]),
                            maxiter=50 * n)[0]

            keep = np.ones(len(y), dtype=bool)
            efficiency = solve(keep)
            # One refit without gross outliers (a timing glitch), judged against the entries' spread;
            # an anchor is never left out: the calibration rests on it.
            residual = np.abs(x @ efficiency - y)
            outliers = residual > max(0.03, 5 * float(np.median(residual)))
            outliers[singles:] = False
            if outliers.any() and (~outliers).sum() >= len(y) // 2:
                keep = ~outliers
                efficiency = solve(keep)
            if not per_op:
                efficiency[-1] = 0.0  # the column was zero: a device prior's per-op value must not leak in
            return efficiency, keep, float(np.sqrt(np.mean((x[keep] @ efficiency - y[keep]) ** 2)))

        # The per-op term must earn its place: it is kept only if it cuts the misfit by a fifth.
        # resnet20 at 32x32: 0.026 -> 0.015, kept; resnet18/50 at 224: < 6%, and it made their
        # predictions worse (resnet18 worst 11.2% against 9.8%), so there it stays 0.
        efficiency, keep, rms = fit(False, singles) if singles else (prior.copy(), np.ones(0, dtype=bool), 0.0)
        with_op = fit(True, singles) if singles else None
        if with_op is not None and with_op[2] < 0.8 * rms:
            efficiency, keep, rms = with_op
        elif len(y_all) > singles:
            # A few single entries cannot tell per-op overhead from per-layer cost; the anchors, which change
            # many layers at once, can. Launch-bound resnet50 on an H200 (torch eager, batch 1; 10 entries)
            # measured its uniform anchors at 1.00 and 13 blocks removed at 0.34; fitted on the entries alone,
            # every block it had not timed was predicted at 0.999 and the depth floor at 0.81. So the same
            # rule is tried again on the entries and the anchors together (tests/test_latency_launch_bound.py).
            without, with_anchors = fit(False, len(y_all)), fit(True, len(y_all))
            if with_anchors[2] < 0.8 * without[2]:
                efficiency, keep, rms = with_anchors
        self.outliers = int((~keep).sum())
        return efficiency, rms

    def _calibrate(self) -> tuple[float, float]:
        """Scales on the narrowed and the removed layers' savings that meet the table's anchors.

        Single-change entries leave the model's overall level open to how the host runs a model that
        changed everywhere at once (caches, memory traffic, many ops gone) and to its state during this
        table; the anchors measure exactly that, in the same run. Width first (its anchors remove
        nothing), each anchor's measured/predicted ratio counting once (_mean_ratio), then depth by
        least squares on what width leaves. Bounded, so a bad anchor cannot wreck the model; depth more
        loosely, since summed single-block savings can be far off.
        """
        anchors = [a for a in self.table.anchors.values() if all(b in self.blocks for b in a.removed)]
        removed = [[self.blocks[b] for b in a.removed] for a in anchors]
        width = np.array([self._width_saving(a.kept, r) for a, r in zip(anchors, removed)])
        depth = np.array([self._depth_saving(r) for r in removed])
        measured = np.array([1.0 - a.ratio for a in anchors])
        pure = depth == 0
        w_scale = _mean_ratio(width[pure], measured[pure], 0.7, 1.3)
        d_scale = _scale(depth[~pure], measured[~pure] - w_scale * width[~pure], 0.5, 1.5)
        return w_scale, d_scale

    def _width_saving(self, kept: dict[str, int], removed: list[Block]) -> float:
        """The narrowed groups' saving on the layers that remain (per-layer model, unscaled)."""
        return float(self._parts(kept, {n for b in removed for n in b.nodes})[0] @ self.efficiency)

    def _depth_saving(self, removed: list[Block]) -> float:
        """Summed single-block savings as measured (unscaled); a block without an entry is modelled.

        Not clipped at zero: the depth anchors remove every block, and they are calibrated against
        the entries as measured (two of mobilenet_v2's blocks measured 1.011 and 1.037)."""
        total = 0.0
        for b in removed:
            if b.id in self.table.blocks:
                total += 1.0 - self.table.blocks[b.id]
            else:
                total += float(self._parts({}, set(b.nodes))[1] @ self.efficiency)
        return total

    def predict(self, kept: dict[str, int], removed: list[Block]) -> Prediction:
        """Latency ratio of a plan that keeps kept[gid] units per group and removes `removed` blocks."""
        table = self.table
        additive = 1.0 + sum(table.group_ratio(g, k) - 1.0 for g, k in kept.items()) \
            + sum(table.block_ratio(b.id) - 1.0 for b in removed)
        saved = self.anchor_scale * self._width_saving(kept, removed) + self.depth_scale * self._depth_saving(removed)
        return Prediction(additive=additive, corrected=max(self.floor, 1.0 - saved))


# Share of the fastest measured model below which no prediction goes (see latency_floor).
FLOOR_SHARE = 0.25


def latency_floor(table: Table) -> float:
    """The lowest latency ratio a prediction may give: a quarter of the fastest model this table measured.

    Every plan keeps what every measured model kept (stem, head, one unit per group, the per-call
    overhead), so a fitted saving that goes past it is extrapolation, not physics: on a noisy host
    resnet20's seven single-block savings summed past 100% and predicted a negative latency.
    """
    measured = [r for entries in table.groups.values() for r in entries.values()]
    measured += list(table.blocks.values()) + [a.ratio for a in table.anchors.values()]
    return FLOOR_SHARE * min([1.0, *(r for r in measured if r > 0)])


def _mean_ratio(predicted: np.ndarray, measured: np.ndarray, low: float, high: float) -> float:
    """Mean over anchors of measured/predicted saving, each clipped to [low, high]; 1 without data.

    Not least squares, which weights an anchor by its predicted saving squared and so lets the deepest
    uniform anchor set the level alone. Where that anchor hits a kernel cliff, the level is wrong for
    every mixed plan: regnet_y_800mf's uniform-0.50 anchor (grouped convs at 8 of 16 channels per
    group, which ORT runs barely faster) measured 0.72 of its predicted saving, uniform-0.75 0.94,
    random mixed plans a median 0.88 (bench/results/lut_replay_regnet_anchors.txt). Replaying
    bench/results/lut_regnet_rerun.txt, its full table's worst plan went from 16.7% / 15.9% off to
    11.3% / 9.7% (bench/results/lut_replay_regnet_*.txt)."""
    usable = predicted > 1e-6
    if not usable.any():
        return 1.0
    return float(np.mean(np.clip(measured[usable] / predicted[usable], low, high)))


def _scale(predicted: np.ndarray, measured: np.ndarray, low: float, high: float) -> float:
    """Least-squares factor on predicted savings to meet measured ones, clipped; 1 without data."""
    if not predicted.size or predicted @ predicted <= 0:
        return 1.0
    return float(np.clip(predicted @ measured / (predicted @ predicted), low, high))
