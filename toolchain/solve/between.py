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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphs.blocks import Block
from graphs.deps import Analysis
from toolchain.latency.table import Table
from toolchain.solve.budget import Decision, decision_from, outside_share, top_values, within
from toolchain.latency.predict import Predictor

# A change the table prices at (about) no latency comes first, whatever it keeps.
FREE = 1e-9


@dataclass(frozen=True)
class Change:
    """One step of the path: a group widened to the missed plan's width, or a block the met plan removes
    restored with its inner groups at the missed plan's widths."""
    widths: dict[str, int]  # group id -> the missed plan's width
    value: float  # importance it keeps over the step before
    cost: float  # the table's latency ratio it adds
    block: Block | None = None  # the block restored, if it is one

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
    return Change(inner, value, cost, block)


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
            value = _top(scores[group.id], wide) - _top(scores[group.id], narrow)
            cost = table.group_ratio(group.id, wide) - table.group_ratio(group.id, narrow)
            changes.append(Change({group.id: wide}, value, cost))
    return Path(start, removed, sorted(changes, key=lambda c: -c.value / max(c.cost, FREE)))


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
