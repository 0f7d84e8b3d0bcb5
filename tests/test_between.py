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
from toolchain.latency.table import Table
from toolchain.solve.budget import decision_from, solve_filter, solve_joint, width_options


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
    # And keep whole the group the met plan narrows most, so that one group widens by several grid steps.
    deep = max(low.kept, key=lambda g: analysis.group(g).channels - low.kept[g])
    assert analysis.group(deep).channels - low.kept[deep] >= 16
    kept = {g: k for g, k in {**wider.kept, whole.id: 8}.items() if g != deep}
    high = decision_from(predictor, scores, kept, [], 8, 0.7, wider.smallest, {})
    path = path_between(low, high, analysis, table, scores)
    plans = [plan_on_path(low, path, k, predictor, scores, 0.6) for k in range(len(path.changes) + 1)]
    assert len(path.changes) >= 3
    lo, hi, start = widths(analysis, low.kept), widths(analysis, high.kept), widths(analysis, plans[0].kept)
    assert start == {g: min(lo[g], hi[g]) for g in lo}  # narrowed wherever either plan is narrower
    assert start[whole.id] == 8
    assert widths(analysis, plans[-1].kept) == hi  # the last plan is the missed plan
    first = path.changes[0]
    assert first.describe() == ", ".join(f"group {g} widened to {k}" for g, k in first.widths.items())
    rates = [c.rate for c in path.changes]
    assert rates == sorted(rates, reverse=True) and all(c.cost > 0 and c.value > 0 for c in path.changes)
    additive = [p.predicted.additive for p in plans]
    assert additive == sorted(additive) and additive[0] <= low.predicted.additive + 1e-9
    # Each group widens one grid step per change (rates fall along a group here, so no step is merged):
    # the path has as many changes as grid steps, and each plan widens one group of the plan before it.
    grid = {g.id: [w for w in width_options(g, 8) if start[g.id] < w <= hi[g.id]] for g in analysis.groups}
    assert len(path.changes) == sum(map(len, grid.values())) > sum(lo[g] < hi[g] for g in lo)
    for k, plan in enumerate(plans):
        now = widths(analysis, plan.kept)
        assert all(start[g] <= now[g] <= hi[g] and (now[g] == start[g] or now[g] in grid[g]) for g in now)
        assert plan.plan.provenance["between"] == {"changes": k, "of": len(path.changes)}
        if k:
            before = widths(analysis, plans[k - 1].kept)
            grew = [g for g in now if now[g] != before[g]]
            assert len(grew) == 1 and now[grew[0]] == min(w for w in grid[grew[0]] if w > before[grew[0]])


def test_a_step_that_keeps_more_per_latency_than_the_one_before_it_shares_its_place_on_the_path(setup):
    analysis, _, _, scores = setup
    group = next(g for g in analysis.groups if g.prunable and g.channels == 64)
    steps = {}
    for name, samples in (("linear", {8: 0.6}), ("steep first", {8: 0.6, 16: 0.99})):
        table = Table(base_ms=1.0, widths={g.id: g.channels for g in analysis.groups}, groups={group.id: samples})
        low = decision_from(Predictor(table, analysis), scores, {group.id: 8}, [], 8, 0.7, None, {})
        high = decision_from(Predictor(table, analysis), scores, {}, [], 8, 0.7, None, {})
        steps[name] = path_between(low, high, analysis, table, scores).changes
    # 8 -> 64 on a grid of 8 is seven steps, in order, either way
    assert all([c.widths[group.id] for c in steps[name]] == [16, 24, 32, 40, 48, 56, 64] for name in steps)
    # Equal costs and falling values: each step keeps less per latency than the one before.
    rates = [c.rate for c in steps["linear"]]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == 7
    assert rates == pytest.approx([c.value / c.cost for c in steps["linear"]])
    # Past 16 the group is almost free, so every later step keeps more per latency than 8 -> 16: all seven share
    # one place (their segment's rate), which a path sorted by each step's own rate could not keep in order.
    whole = steps["steep first"]
    assert [c.rate for c in whole] == [pytest.approx(sum(c.value for c in whole) / 0.4)] * 7
    assert whole[0].value / whole[0].cost < whole[1].value / whole[1].cost


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
