"""Plans between two plans, for when a measured cliff puts the budget between two solver targets.

The refinement (toolchain/refine.py) moves one number, the solver's target. Near some budgets two
neighbouring targets give plans that measure far apart: Lite0 at 0.7 (seed 1 of the ten-epoch runs)
measured 0.642 at target 0.563 and 0.715 at target 0.571, and the run kept the 0.642 plan, leaving
8% of the budget unspent. No target gives a plan in between, but the plans in between exist: the
met plan with some of the missed plan's wider groups and kept blocks. `path_between` starts from the met
plan narrowed, and with blocks removed, wherever the missed plan is narrower or removes more (faster than
the met plan, so it meets the budget too) and lists the missed plan's wider groups and the blocks it
keeps in the order a knapsack would take them (most importance kept per unit of table latency first):
the k-th plan on the path takes the k best, the last is the missed plan, and the refinement bisects k
by measurement.

A group is widened one step of the channel grid at a time, not in one jump: the transfer recipe's cliff
(0.456 met, 0.517 missed) was a single group, blocks.6.0.conv_pwl, widened to 320 in one change, so no
plan lay between (bench/results/transfer_lite0_floor_fill_check.txt; with grid steps the first plan bisected
measured 0.499: bench/results/transfer_lite0_cliff_remeasured.txt). Steps of one group keep their order
on the path: the path is sorted by each step's segment of the upper hull of its group's value-latency
curve (a step that keeps more per latency than the one before it shares that step's segment), so a
group's segments fall in rate, its steps stay in order, and the steps of one segment stay together.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from graphs.alignment import aligned_widths
from graphs.blocks import Block
from graphs.deps import Analysis
from toolchain.latency.table import Table
from toolchain.solve.budget import Decision, decision_from, outside_share, top_values, within
from toolchain.latency.predict import Predictor

# A change the table prices at (about) no latency comes first, whatever it keeps.
FREE = 1e-9


@dataclass(frozen=True)
class Change:
    """One step of the path: a group widened one or more grid steps toward the missed plan's width, or a
    block the met plan removes restored with its inner groups at the missed plan's widths."""
    widths: dict[str, int]  # group id -> its width after this step
    value: float  # importance it keeps over the step before
    cost: float  # the table's latency ratio it adds
    block: Block | None = None  # the block restored, if it is one
    rate: float = 0.0  # the path's order, best first: value per cost, of the step's hull segment for a group

    def describe(self) -> str:
        if self.block is not None:
            return f"block {self.block.id} restored"
        return ", ".join(f"group {gid} widened to {k}" for gid, k in self.widths.items())


@dataclass(frozen=True)
class Path:
    """From the start (the met plan, narrowed and with blocks removed wherever the missed plan is
    narrower or removes more: faster still) to the missed plan, one change at a time, best first."""
    start: dict[str, int]  # group id -> kept units
    removed: list[Block]
    changes: list[Change]


def _top(scores: np.ndarray, k: int) -> float:
    return float(top_values(scores, np.array([k]))[0])


def _rate(steps: list[Change]) -> float:
    return sum(c.value for c in steps) / max(sum(c.cost for c in steps), FREE)


def _widen(group, narrow: int, wide: int, round_to: int, table: Table, scores: np.ndarray) -> list[Change]:
    """Widening `group` from `narrow` to `wide` units, one grid step per change. A step that keeps as much
    or more per latency than the segment before it joins that segment, so the segments' rates strictly fall."""
    grid = [k for k in aligned_widths(group.channels, group.multiplicity, round_to) if narrow < k < wide] + [wide]
    segments: list[list[Change]] = []
    for before, after in zip([narrow] + grid, grid):
        segment = [Change({group.id: after}, _top(scores, after) - _top(scores, before),
                          table.group_ratio(group.id, after) - table.group_ratio(group.id, before))]
        while segments and _rate(segments[-1]) <= _rate(segment):
            segment = segments.pop() + segment
        segments.append(segment)
    return [replace(step, rate=_rate(segment)) for segment in segments for step in segment]


def _inside(group, blocks: list[Block]) -> bool:
    members = [m for b in blocks for m in b.members]
    return bool(group.widths) and all(within(m, members) for m in group.widths)


def _restore(block: Block, high: Decision, analysis: Analysis, table: Table, scores) -> Change:
    """Restoring `block` keeps its inner groups (at the missed plan's widths) and its share of the groups
    that continue outside it, as the joint knapsack values a kept block (budget.py)."""
    inner = {g.id: high.kept.get(g.id, g.channels) for g in analysis.groups if _inside(g, [block])}
    value = sum(_top(scores[gid], k) for gid, k in inner.items())
    value += outside_share(block, [g for g in analysis.groups if g.id not in inner], scores)
    cost = sum(table.group_ratio(gid, k) - 1.0 for gid, k in inner.items()) + 1.0 - table.block_ratio(block.id)
    return Change(inner, value, cost, block, value / max(cost, FREE))


def path_between(low: Decision, high: Decision, analysis: Analysis, table: Table,
                 scores: dict[str, np.ndarray]) -> Path:
    """The path from `low` (met) to `high` (missed)."""
    high_ids = {b.id for b in high.removed}
    restored = [b for b in low.removed if b.id not in high_ids]
    low_ids = {b.id for b in low.removed}
    removed = list(low.removed) + [b for b in high.removed if b.id not in low_ids]  # the start removes both
    start = dict(low.kept)
    changes = [_restore(b, high, analysis, table, scores) for b in restored]
    for group in analysis.groups:
        if _inside(group, low.removed + high.removed):  # restored with its block, or gone either way
            continue
        narrow = low.kept.get(group.id, group.channels)
        wide = high.kept.get(group.id, group.channels)
        if wide < narrow:
            start[group.id] = wide
        elif wide > narrow:
            changes += _widen(group, narrow, wide, low.plan.round_to, table, scores[group.id])
    return Path(start, removed, sorted(changes, key=lambda c: -c.rate))  # stable: a group's steps keep their order


def widening_path(low: Decision, predictor: Predictor, analysis: Analysis, table: Table,
                  scores: dict[str, np.ndarray]) -> Path:
    """From `low` to `low` at full width, its blocks still removed: where the cliff between a met and a
    missed plan is one change wide (a whole block: ResNet-20 at 0.5 kept 0.443 when restoring layer1.0
    measured 0.511), the budget left can still buy back the met plan's narrowed groups."""
    full = decision_from(predictor, scores, {}, list(low.removed), low.plan.round_to, low.predicted.corrected,
                         low.smallest, low.plan.provenance)
    return path_between(low, full, analysis, table, scores)


def plan_on_path(low: Decision, path: Path, k: int, predictor: Predictor, scores: dict[str, np.ndarray],
                 budget: float) -> Decision:
    """The path's start with its first k changes (on `low`'s channel grid)."""
    kept, removed = dict(path.start), list(path.removed)
    for change in path.changes[:k]:
        kept.update(change.widths)
        if change.block is not None:
            removed = [b for b in removed if b.id != change.block.id]
    provenance = {**low.plan.provenance, "between": {"changes": k, "of": len(path.changes)}}
    return decision_from(predictor, scores, kept, removed, low.plan.round_to, budget, low.smallest, provenance)
