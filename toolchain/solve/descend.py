"""Greedy descent on the per-layer model, for when the additive knapsack cannot land near a budget.

The knapsack (budget.py) weighs every option by its own table entry, summed (SP-LAMP eq. 7). Where
those savings overlap a lot, the sum runs out before the per-layer model's prediction reaches the
budget: on EfficientNet-Lite0 at 64x64 the additive sum hit its floor (about 0.05) while the plans
it gave were predicted at 0.53, and the next plan down jumped to 0.45, so at budget 0.5 no target
gave a plan near 0.5. Descent starts from the knapsack's best plan above the budget and takes,
one step at a time, the option change that buys the most predicted latency per unit of importance
lost, until the per-layer prediction fits.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from toolchain.latency.predict import Predictor

# Below this importance loss a move counts as free: its ratio would divide by ~0.
EPSILON = 1e-12


def descend(picks: list[int], values: list[np.ndarray], decode: Callable, predictor: Predictor, budget: float,
            moves: Callable[[int, int], list[int]]) -> list[int] | None:
    """From `picks` (an option index per item), change one item at a time to one of its `moves(item,
    option)` (a narrower width, a removal), the change with the most predicted saving per importance
    lost, until the per-layer prediction is <= budget. Returns the picks that fit, or None when no
    change saves anything more."""
    picks = list(picks)
    now = predictor.predict(*decode(picks)).corrected
    while now > budget:
        best = None  # (saving per loss, item, option, prediction)
        for i, current in enumerate(picks):
            for option in moves(i, current):
                trial = picks[:i] + [option] + picks[i + 1:]
                predicted = predictor.predict(*decode(trial)).corrected
                saving = now - predicted
                if saving <= 0:
                    continue
                rate = saving / max(float(values[i][current] - values[i][option]), EPSILON)
                if best is None or rate > best[0]:
                    best = (rate, i, option, predicted)
        if best is None:
            return None
        picks[best[1]], now = best[2], best[3]
    return picks


def narrower(current: int) -> list[int]:
    """A width item's move: its next narrower option (options run from narrowest to full width)."""
    return [current - 1] if current > 0 else []
