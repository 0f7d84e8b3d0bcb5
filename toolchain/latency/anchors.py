"""Anchor entries: many groups narrowed, or many blocks removed, at once. They calibrate the
per-layer model (predict.py) on plans that change many layers together."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphs.blocks import Block
from graphs.alignment import round_count
from graphs.deps import Analysis


@dataclass
class Anchor:
    """A multi-change entry: many groups narrowed, or many blocks removed, at once."""

    kept: dict[str, int]
    removed: list[str]  # block ids
    ratio: float


def anchor_widths(analysis: Analysis, fraction: float, round_to: int) -> dict[str, int]:
    """Kept units per prunable group when every group keeps `fraction` of its width, on the grid."""
    kept = {}
    for g in analysis.groups:
        if g.prunable:
            k = round_count(max(1, int(round(fraction * g.channels))), g.channels, g.multiplicity, round_to)
            if k < g.channels:
                kept[g.id] = k
    return kept


def anchor_name(fraction: float) -> str:
    return f"uniform-{fraction:.2f}"


def anchor_blocks(blocks: list[Block], fraction: float) -> list[str]:
    """Ids of `fraction` of the disjoint removable blocks, spread evenly through the network."""
    disjoint, taken = [], set()
    for b in blocks:  # topological order; a block overlapping an earlier pick is skipped
        if not taken & set(b.nodes):
            disjoint.append(b.id)
            taken |= set(b.nodes)
    n = int(round(fraction * len(disjoint)))
    if n < 1:
        return []
    return [disjoint[i] for i in np.unique(np.round(np.linspace(0, len(disjoint) - 1, n)).astype(int))]


def depth_anchor_name(fraction: float) -> str:
    return f"depth-{fraction:.2f}"

