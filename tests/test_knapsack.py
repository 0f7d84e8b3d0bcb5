"""Solvers against brute force on small random instances."""
import itertools

import numpy as np
import pytest

from toolchain.solve.knapsack import GroupKnapsack, zero_one_knapsack


def brute_force_best(values, weights, capacity):
    """The best total value with one option per item within `capacity` (None: nothing fits)."""
    best = None
    for combo in itertools.product(*[range(v.size) for v in values]):
        if sum(int(weights[i][o]) for i, o in enumerate(combo)) <= capacity:
            v = sum(values[i][o] for i, o in enumerate(combo))
            best = v if best is None or v > best else best
    return best


@pytest.mark.parametrize("seed", range(12))
def test_group_knapsack_is_optimal(seed):
    rng = np.random.default_rng(seed)
    items = rng.integers(1, 5)
    values = [np.sort(rng.random(rng.integers(1, 5))) for _ in range(items)]
    weights = [rng.integers(0, 8, size=v.size) for v in values]
    capacity = int(rng.integers(0, 20))
    picked = GroupKnapsack(values, weights).pick(capacity)
    best = brute_force_best(values, weights, capacity)
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
    assert GroupKnapsack([np.array([1.0])], [np.array([5])]).pick(3) is None
    assert GroupKnapsack([np.array([1.0])], [np.array([0])]).pick(-1) is None


def test_one_table_answers_every_capacity():
    """prune's target search asks one filled table for many capacities: each answer must be the
    optimum for that capacity (brute force)."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        values = [np.sort(rng.random(int(rng.integers(1, 5)))) for _ in range(int(rng.integers(1, 6)))]
        weights = [rng.integers(0, 20, len(v)) for v in values]
        table = GroupKnapsack(values, weights)
        for capacity in range(-1, int(sum(w.max() for w in weights)) + 3):
            best = brute_force_best(values, weights, capacity)
            shared = table.pick(capacity)
            assert (best is None) == (shared is None)
            if best is not None:
                assert sum(v[i] for v, i in zip(values, shared)) == pytest.approx(best)
                assert sum(w[i] for w, i in zip(weights, shared)) <= capacity
