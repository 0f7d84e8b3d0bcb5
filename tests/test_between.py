"""Plans between a met and a missed plan (toolchain/solve/between.py), on resnet20's real groups with
the MAC-proportional fixture table (tests/tables.py), so the path's order and ends are known exactly."""
import numpy as np
import pytest

from graphs.blocks import removable_blocks
from graphs.deps import analyze
from graphs.onnx_io import load_model
from tables import mac_table
from toolchain.latency.predict import Predictor
from toolchain.solve.between import path_between, plan_on_path
from toolchain.solve.budget import decision_from, solve_filter, solve_joint


@pytest.fixture(scope="module")
def setup(resnet20_onnx):
    analysis = analyze(load_model(resnet20_onnx))
    blocks = removable_blocks(analysis.model, analysis.shapes)
    rng = np.random.default_rng(0)
    return analysis, blocks, mac_table(analysis, blocks), {g.id: rng.random(g.channels) for g in analysis.groups}


def widths(analysis, kept):
    return {g.id: kept.get(g.id, g.channels) for g in analysis.groups}


def test_the_path_runs_from_a_faster_start_to_the_missed_plan_best_value_first(setup):
    analysis, _, table, scores = setup
    low, wider = solve_filter(analysis, table, scores, 0.5), solve_filter(analysis, table, scores, 0.7)
    predictor = Predictor(table, analysis)
    # A missed plan can also be narrower than the met one somewhere: narrow one group the met plan keeps whole.
    whole = next(g for g in analysis.groups if g.prunable and g.id not in low.kept and g.id not in wider.kept)
    high = decision_from(predictor, scores, {**wider.kept, whole.id: 8}, [], 8, 0.7, wider.smallest, {})
    path = path_between(low, high, analysis, table, scores)
    plans = [plan_on_path(low, path, k, predictor, scores, 0.6) for k in range(len(path.changes) + 1)]
    assert len(path.changes) >= 3
    lo, hi, start = widths(analysis, low.kept), widths(analysis, high.kept), widths(analysis, plans[0].kept)
    assert start == {g: min(lo[g], hi[g]) for g in lo}  # narrowed wherever either plan is narrower
    assert start[whole.id] == 8
    assert widths(analysis, plans[-1].kept) == hi  # the last plan is the missed plan
    first = path.changes[0]
    assert first.describe() == ", ".join(f"group {g} widened to {k}" for g, k in first.widths.items())
    rates = [c.value / c.cost for c in path.changes]
    assert rates == sorted(rates, reverse=True) and all(c.cost > 0 and c.value > 0 for c in path.changes)
    additive = [p.predicted.additive for p in plans]
    assert additive == sorted(additive) and additive[0] <= low.predicted.additive + 1e-9
    for k, plan in enumerate(plans):
        now = widths(analysis, plan.kept)
        assert all(start[g] <= now[g] <= hi[g] for g in now)
        assert sum(now[g] != start[g] for g in now) == k
        assert plan.plan.provenance["between"] == {"changes": k, "of": len(path.changes)}


def test_a_block_only_the_met_plan_removes_is_restored_on_the_path_with_its_inner_groups(setup):
    analysis, blocks, _, scores = setup
    table = mac_table(analysis, blocks, width_share=0.5, block_overhead=0.04)  # joint removes blocks here
    low, high = (solve_joint(analysis, table, blocks, scores, budget) for budget in (0.65, 0.8))
    assert low.removed and not high.removed, "the test needs a block only the met plan removes"
    path = path_between(low, high, analysis, table, scores)
    restores = [c for c in path.changes if c.block is not None]
    assert [c.block.id for c in restores] == [b.id for b in low.removed]
    assert restores[0].describe() == f"block {low.removed[0].id} restored"  # what the refinement logs
    block = low.removed[0]
    inner = {g.id for g in analysis.groups if g.widths and all(m.startswith(tuple(block.members)) for m in g.widths)}
    assert inner and set(restores[0].widths) == inner
    assert all(len(c.widths) == 1 for c in path.changes if c.block is None)  # groups outside: one at a time
    predictor = Predictor(table, analysis, blocks)
    plans = [plan_on_path(low, path, k, predictor, scores, 0.7) for k in range(len(path.changes) + 1)]
    assert [b.id for b in plans[0].removed] == [block.id]
    at = path.changes.index(restores[0])
    assert all(bool(p.removed) == (k <= at) for k, p in enumerate(plans))
    assert widths(analysis, plans[-1].kept) == widths(analysis, high.kept) and not plans[-1].removed
    additive = [p.predicted.additive for p in plans]
    assert additive == sorted(additive)
