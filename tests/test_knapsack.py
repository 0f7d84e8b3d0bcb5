"""Solvers against brute force on small random instances."""
import itertools

import numpy as np
import pytest

from toolchain.solve.knapsack import GroupKnapsack, zero_one_knapsack


def group_knapsack(values, weights, capacity):
    """One table filled for `capacity` alone."""
    return GroupKnapsack(values, weights, capacity).pick(capacity)


@pytest.mark.parametrize("seed", range(12))
def test_group_knapsack_is_optimal(seed):
    rng = np.random.default_rng(seed)
    items = rng.integers(1, 5)
    values = [np.sort(rng.random(rng.integers(1, 5))) for _ in range(items)]
    weights = [rng.integers(0, 8, size=v.size) for v in values]
    capacity = int(rng.integers(0, 20))
    picked = group_knapsack(values, weights, capacity)
    best = None
    for combo in itertools.product(*[range(v.size) for v in values]):
        w = sum(int(weights[i][o]) for i, o in enumerate(combo))
        if w <= capacity:
            v = sum(values[i][o] for i, o in enumerate(combo))
            best = v if best is None or v > best else best
    if best is None:
        assert picked is None
        return
    assert len(picked) == items  # exactly one option per item
    assert sum(int(weights[i][o]) for i, o in enumerate(picked)) <= capacity
    assert sum(values[i][o] for i, o in enumerate(picked)) == pytest.approx(best)


@pytest.mark.parametrize("seed", range(12))
def test_zero_one_knapsack_is_optimal(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 10))
    values, weights = rng.random(n), rng.integers(0, 6, size=n)
    capacity = int(rng.integers(0, 15))
    mask = zero_one_knapsack(values, weights, capacity)
    best = max(sum(values[list(s)]) for r in range(n + 1) for s in itertools.combinations(range(n), r)
               if sum(weights[list(s)]) <= capacity)
    assert weights[mask].sum() <= capacity
    assert values[mask].sum() == pytest.approx(best)


def test_infeasible_is_none():
    assert group_knapsack([np.array([1.0])], [np.array([5])], 3) is None
    assert group_knapsack([np.array([1.0])], [np.array([0])], -1) is None


def test_one_table_answers_every_capacity():
    """prune's target search asks one filled table for many capacities: each answer must be the
    optimum a table filled for that capacity alone gives."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        values = [np.sort(rng.random(int(rng.integers(1, 5)))) for _ in range(int(rng.integers(1, 6)))]
        weights = [rng.integers(0, 20, len(v)) for v in values]
        table = GroupKnapsack(values, weights)
        for capacity in range(-1, int(sum(w.max() for w in weights)) + 3):
            alone = group_knapsack(values, weights, capacity)
            shared = table.pick(capacity)
            assert (alone is None) == (shared is None)
            if alone is not None:
                value = lambda picked: sum(v[i] for v, i in zip(values, picked))
                assert value(shared) == pytest.approx(value(alone))
                assert sum(w[i] for w, i in zip(weights, shared)) <= capacity
