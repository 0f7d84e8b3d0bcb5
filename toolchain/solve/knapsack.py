"""The two knapsacks of the papers, vectorised with numpy.

Costs are latency (ratio to the unpruned model) scaled to integers: SP-LAMP multiplies by 10,000.
"""
from __future__ import annotations

import numpy as np

RESOLUTION = 10_000


def to_units(costs: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    return np.round(np.asarray(costs, dtype=np.float64) * resolution).astype(np.int64)


class GroupKnapsack:
    """The group knapsack's table, filled once; `pick(c)` answers any capacity.

    best[c] is the best value with total weight <= c and is the same whatever the table's size, so
    one table serves every target of prune's search (it asks 3-8): resnet50's joint solve went from
    five fills to one. Filled up to the sum of the heaviest options, every capacity is covered.
    """

    def __init__(self, values: list[np.ndarray], weights: list[np.ndarray]):
        self.weights = weights
        self.capacity = int(sum(int(np.max(w)) for w in weights)) if weights else 0
        size = self.capacity + 1
        best = np.zeros(size)  # best[c]: best value of the items so far with total weight <= c
        self.choices = []
        for vals, wts in zip(values, weights):
            new = np.full(size, -np.inf)
            pick = np.full(size, -1, dtype=np.int32)
            for option, (v, w) in enumerate(zip(vals.tolist(), wts.tolist())):
                if w > self.capacity:
                    continue
                # In place on the views from w up: below w this option does not fit.
                candidate = best[: size - w] + v
                better = candidate > new[w:]
                np.copyto(new[w:], candidate, where=better)
                np.copyto(pick[w:], option, where=better)
            best = new
            self.choices.append(pick)
        self.best = best

    def pick(self, capacity: int) -> list[int] | None:
        """Option index per item for the best choice within `capacity`, or None when nothing fits."""
        if capacity < 0:
            return None
        c = min(capacity, self.capacity)
        if not np.isfinite(self.best[c]):
            return None
        picked = []
        for item in range(len(self.choices) - 1, -1, -1):
            option = int(self.choices[item][c])
            picked.append(option)
            c -= int(self.weights[item][option])
        return picked[::-1]


def zero_one_knapsack(values: np.ndarray, weights: np.ndarray, capacity: int) -> np.ndarray | None:
    """HALP's 0-1 knapsack: a mask of the items taken (max value, total weight <= capacity)."""
    if capacity < 0:
        return None
    size = capacity + 1
    best = np.zeros(size)
    take = np.zeros((len(values), size), dtype=bool)
    for i, (v, w) in enumerate(zip(values.tolist(), weights.tolist())):
        if w > capacity:
            continue
        candidate = np.full(size, -np.inf)
        candidate[w:] = best[: size - w] + v
        better = candidate > best
        take[i] = better
        best = np.where(better, candidate, best)
    mask = np.zeros(len(values), dtype=bool)
    c = capacity
    for i in range(len(values) - 1, -1, -1):
        if take[i, c]:
            mask[i] = True
            c -= int(weights[i])
    return mask
