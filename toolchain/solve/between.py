"""Plans between two plans, for when a measured cliff puts the budget between two solver targets.

The refinement (toolchain/refine.py) moves one number, the solver's target. Near some budgets two
neighbouring targets give plans that measure far apart: Lite0 at 0.7 (seed 1 of the ten-epoch runs)
measured 0.642 at target 0.563 and 0.715 at target 0.571, and the run kept the 0.642 plan, leaving
8% of the budget unspent. No target gives a plan in between, but the plans in between exist: the
met plan with some of the missed plan's wider groups. `path_between` starts from the met plan narrowed
wherever the missed plan is narrower (faster than the met plan, so it meets the budget too) and lists
the missed plan's wider groups in the order a knapsack would take them (most importance kept per unit
of table latency first): the k-th plan on the path takes the k best, the last is the missed plan, and
the refinement bisects k by measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphs.deps import Analysis
from toolchain.latency.table import Table
from toolchain.solve.budget import Decision, decision_from, within
from toolchain.latency.predict import Predictor

# A change the table prices at (about) no latency comes first, whatever it keeps.
FREE = 1e-9


@dataclass(frozen=True)
class Change:
    group: str
    width: int  # the missed plan's width for the group (the met plan keeps fewer)
    value: float  # importance the wider group keeps over the met plan's width
    cost: float  # the table's latency ratio for the wider group minus the narrower


def _top(scores: np.ndarray, k: int) -> float:
    return float(np.sort(np.asarray(scores, dtype=np.float64))[::-1][:k].sum())


@dataclass(frozen=True)
class Path:
    """From `start` (the met plan with every group the missed plan keeps narrower narrowed too: faster
    still) to the missed plan, one widening at a time."""
    start: dict[str, int]  # group id -> kept units
    changes: list[Change]  # best first


def path_between(low: Decision, high: Decision, analysis: Analysis, table: Table,
                 scores: dict[str, np.ndarray]) -> Path:
    """The path from `low` (met) to `high` (missed). Blocks stay as `low` has them: a group living in a
    block either plan removes is left as `low` has it (its width means nothing with the block gone)."""
    gone = [m for block in low.removed + high.removed for m in block.members]
    start, changes = dict(low.kept), []
    for group in analysis.groups:
        narrow = low.kept.get(group.id, group.channels)
        wide = high.kept.get(group.id, group.channels)
        if wide == narrow or any(within(m, gone) for m in group.widths):
            continue
        if wide < narrow:
            start[group.id] = wide
            continue
        value = _top(scores[group.id], wide) - _top(scores[group.id], narrow)
        cost = table.group_ratio(group.id, wide) - table.group_ratio(group.id, narrow)
        changes.append(Change(group.id, wide, value, cost))
    return Path(start, sorted(changes, key=lambda c: -c.value / max(c.cost, FREE)))


def plan_on_path(low: Decision, path: Path, k: int, predictor: Predictor, scores: dict[str, np.ndarray],
                 budget: float) -> Decision:
    """The path's start with its first k widenings (on `low`'s channel grid, with `low`'s blocks)."""
    kept = dict(path.start)
    for change in path.changes[:k]:
        kept[change.group] = change.width
    provenance = {**low.plan.provenance, "between": {"widened": k, "of": len(path.changes)}}
    return decision_from(predictor, scores, kept, list(low.removed), low.plan.round_to, budget, low.smallest,
                         provenance)
