"""Which measured plan `prune --budget` keeps: the budget rule (a ceiling, met within one standard error)
and the least-pruned plan among those that meet it."""
from __future__ import annotations

from dataclasses import dataclass

from toolchain.solve.budget import Decision


def meets_budget(measured: dict, budget: float) -> bool:
    """A budget is a ceiling: met when the measured ratio is within one standard error above it."""
    return bool(measured["ratio"] <= budget + measured.get("ratio_se", 0.0))


@dataclass
class Attempt:
    decision: Decision
    measured: dict  # ratio (of the original model's latency), ratio_se, reference_ms, pruned_ms
    params: int  # parameters kept
    row: dict  # its history row
    value: float  # the importance it keeps (toolchain/solve/value.py): the least pruned plan keeps the most


def choose_attempt(attempts: list[Attempt], budget: float) -> Attempt:
    """The least-pruned attempt (most importance kept, then most parameters, then the slower) that meets the
    budget, else the fastest one. The solver's value, not the measured ratio, ranks "least pruned": a ratio
    carries its noise, and parameters rank a removed early block (few of them) as less pruning than a
    narrowed late layer even when the solver paid more for it."""
    meeting = [a for a in attempts if meets_budget(a.measured, budget)]
    if meeting:
        return max(meeting, key=lambda a: (a.value, a.params, a.measured["ratio"]))
    return min(attempts, key=lambda a: a.measured["ratio"])
