"""The latency table of one model on one backend/device, read from the store."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphs.deps import Analysis
from toolchain.latency.anchors import Anchor, anchor_blocks, anchor_name, anchor_widths, depth_anchor_name
from toolchain.latency.config import ProfileConfig
from toolchain.latency.isotonic import monotone
from toolchain.latency.store import Store


@dataclass
class Table:
    """Measured ratios for one model on one backend/device; `base_ms` is the reference's median."""

    base_ms: float
    groups: dict[str, dict[int, float]] = field(default_factory=dict)  # gid -> {k: ratio}
    blocks: dict[str, float] = field(default_factory=dict)  # bid -> ratio
    anchors: dict[str, Anchor] = field(default_factory=dict)  # name -> anchor
    widths: dict[str, int] = field(default_factory=dict)  # gid -> full width (ratio 1.0 there)
    # A reduced table (lut.py, table="reduced"|"prior") leaves entries unmeasured; the per-layer
    # model's estimates stand in for them, so the solvers' knapsack sees every group and block.
    # Never fitted on: the fit (predict.py) reads only `groups`, `blocks` and `anchors`.
    estimated_groups: dict[str, dict[int, float]] = field(default_factory=dict)
    estimated_blocks: dict[str, float] = field(default_factory=dict)
    # The device profile's efficiency per node (and "per-op") and its relative spread: the per-layer
    # fit's prior for a model whose own entries do not pin every layer (device_profile.py).
    prior: dict[str, float] = field(default_factory=dict)
    prior_spread: dict[str, float] = field(default_factory=dict)
    # Set by the profile run that measured entries: some were timed while other processes kept the CPU busy.
    load_warning: str | None = None
    # Set by the profile run that re-timed stale anchors (recheck.py): how far each moved, and one line
    # when any moved by more than timing noise.
    drifts: list = field(default_factory=list)
    drift_warning: str | None = None
    # Set by the profile run that measured entries: its control entry (control.py), and one line when
    # the entries were divided by it.
    control: object | None = None
    control_warning: str | None = None

    @property
    def measured(self) -> int:
        """Table entries measured (single-group, single-block and anchor entries)."""
        return sum(len(v) for v in self.groups.values()) + len(self.blocks) + len(self.anchors)

    def group_ratio(self, gid: str, k: int) -> float:
        """Whole-network ratio with group `gid` at k units, interpolated linearly between samples.

        The samples are made monotone first (fewer channels is never slower; isotonic regression):
        a solver that picks the best-looking entries would otherwise pick measurement noise.
        """
        samples = {**self.estimated_groups.get(gid, {}), **self.groups.get(gid, {})}
        if not samples:
            return 1.0
        ks = sorted(samples) + [self.widths[gid]]
        # Full width is the reference itself (exactly 1.0): samples above it are noise, capped there.
        rs = [min(r, 1.0) for r in monotone([samples[x] for x in sorted(samples)])] + [1.0]
        return float(np.interp(k, ks, rs))

    def block_ratio(self, bid: str) -> float:
        return self.blocks.get(bid, self.estimated_blocks.get(bid, 1.0))

    def block_known(self, bid: str) -> bool:
        return bid in self.blocks or bid in self.estimated_blocks


def load_table(store: Store, sha: str, analysis: Analysis, device: dict, config: ProfileConfig) -> Table:
    rows = store.items(sha, config.backend, device=device["device"], precision=config.precision,
                       batch=config.batch, protocol=config.protocol,
                       runtime_version=f"{device['runtime']} {device['runtime_version']}")
    ref = [r["ref_median_ms"] for r in rows if r["ref_median_ms"]]
    table = Table(base_ms=float(np.median(ref)) if ref else float("nan"),
                  widths={g.id: g.channels for g in analysis.groups})
    for r in rows:
        if r["kind"] == "group":
            table.groups.setdefault(r["item"], {})[int(r["k"])] = float(r["ratio"])
        elif r["kind"] == "block":
            table.blocks[r["item"]] = float(r["ratio"])
    anchors = {r["item"]: float(r["ratio"]) for r in rows if r["kind"] == "anchor"}
    for fraction in config.anchors:
        if anchor_name(fraction) in anchors:
            table.anchors[anchor_name(fraction)] = Anchor(anchor_widths(analysis, fraction, config.round_to), [],
                                                          anchors[anchor_name(fraction)])
    blocks = analysis.blocks if config.depth_anchors else []
    for fraction in config.depth_anchors:
        if depth_anchor_name(fraction) in anchors:
            table.anchors[depth_anchor_name(fraction)] = Anchor({}, anchor_blocks(blocks, fraction),
                                                                anchors[depth_anchor_name(fraction)])
    return table

