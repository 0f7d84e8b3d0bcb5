"""What a table measures: the widths sampled per group, the blocks, the anchors (as candidates)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphs.alignment import aligned_widths
from graphs.deps import Analysis, Group
from graphs.plan import Plan
from toolchain.latency.anchors import anchor_blocks, anchor_name, anchor_widths, depth_anchor_name
from toolchain.latency.backends import OnnxSource, PlanSource
from toolchain.latency.config import ProfileConfig, resolve_round_to


@dataclass
class Candidate:
    kind: str  # "group" | "block"
    item: str
    k: int  # kept units for groups; -1 for blocks
    plan: Plan


def group_grid(group: Group, round_to: int, points: int) -> list[int]:
    """Widths to sample below full width: aligned to round_to, spread evenly down to the narrowest."""
    aligned = aligned_widths(group.channels, group.multiplicity, round_to)
    if not aligned:
        return []
    picks = np.unique(np.round(np.linspace(0, len(aligned) - 1, points)).astype(int)) if points < len(aligned) \
        else np.arange(len(aligned))
    return [aligned[i] for i in picks]


def candidates(analysis: Analysis, config: ProfileConfig) -> list[Candidate]:
    config = resolve_round_to(config)
    out = []
    if config.groups:
        for g in analysis.groups:
            if g.prunable:
                for k in group_grid(g, config.round_to, config.points):
                    # Which units stay does not change the latency: the first k skip scoring.
                    out.append(Candidate("group", g.id, k, Plan(channels={g.id: {"keep": list(range(k))}})))
    blocks = analysis.blocks if config.blocks else []
    for b in blocks:
        out.append(Candidate("block", b.id, -1, Plan(remove=[b.id])))
    if config.groups:
        for fraction in config.anchors:
            kept = anchor_widths(analysis, fraction, config.round_to)
            if len(kept) > 1:  # one group alone is already a group entry
                plan = Plan(channels={gid: {"keep": list(range(k))} for gid, k in kept.items()})
                out.append(Candidate("anchor", anchor_name(fraction), -1, plan))
    for fraction in config.depth_anchors if blocks else ():
        removed = anchor_blocks(blocks, fraction)
        if len(removed) > 1:  # one block alone is already a block entry
            out.append(Candidate("anchor", depth_anchor_name(fraction), -1, Plan(remove=removed)))
    return out


def candidate_source(base: OnnxSource, analysis: Analysis, candidate: Candidate) -> PlanSource:
    """What any backend loads for a candidate: its ONNX from surgery, or its torch module from sync."""
    return PlanSource(base, candidate.plan, analysis)

