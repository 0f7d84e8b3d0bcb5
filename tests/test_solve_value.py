"""The value that ranks measured plans (toolchain/solve/value.py): the joint knapsack's own objective,
on resnet20's real groups and blocks with the MAC-proportional fixture table (tests/tables.py)."""
import numpy as np
import pytest

from graphs.blocks import removable_blocks
from graphs.deps import analyze
from graphs.onnx_io import load_model
from tables import mac_table
from toolchain.latency.predict import Predictor
from toolchain.solve.between import path_between, plan_on_path
from toolchain.solve.budget import solve_filter, solve_joint, solve_layer
from toolchain.solve.value import kept_value


@pytest.fixture(scope="module")
def setup(resnet20_onnx):
    analysis = analyze(load_model(resnet20_onnx))
    blocks = removable_blocks(analysis.model, analysis.shapes)
    rng = np.random.default_rng(0)
    table = mac_table(analysis, blocks, width_share=0.5, block_overhead=0.04)  # joint removes blocks here
    return analysis, blocks, table, {g.id: rng.random(g.channels) for g in analysis.groups}


def test_an_unpruned_plan_keeps_every_score_and_a_looser_target_keeps_more(setup):
    analysis, blocks, table, scores = setup
    everything = sum(float(np.sum(scores[g.id])) for g in analysis.groups if g.prunable)
    assert kept_value(solve_joint(analysis, table, blocks, scores, 1.0), analysis, blocks, scores) == \
        pytest.approx(everything)
    for solve in (lambda t: solve_joint(analysis, table, blocks, scores, t),
                  lambda t: solve_filter(analysis, table, scores, t)):
        plans = [solve(t) for t in (0.6, 0.65, 0.7, 0.8, 0.9)]
        values = [kept_value(p, analysis, blocks, scores) for p in plans]
        assert values == sorted(values) and values[0] < values[-1] < everything
    assert any(solve_joint(analysis, table, blocks, scores, t).removed for t in (0.5, 0.65))  # depth is priced too


def test_a_removed_block_loses_its_inner_widths_and_its_share_of_the_stream(setup):
    analysis, blocks, table, scores = setup
    plan = solve_joint(analysis, table, blocks, scores, 0.65)
    assert plan.removed
    unpruned = solve_joint(analysis, table, blocks, scores, 1.0)
    lost = kept_value(unpruned, analysis, blocks, scores) - kept_value(plan, analysis, blocks, scores)
    narrowed = sum(float(np.sum(scores[g])) - float(np.sum(np.asarray(scores[g])[e["keep"]]))
                   for g, e in plan.plan.channels.items())
    assert lost > narrowed  # removing blocks costs more than the narrowing the plan lists


def test_each_step_between_two_plans_adds_the_value_the_path_priced(setup):
    # between.py prices each change of the path between a met and a missed plan; walking the path, the
    # value of the plans must rise by exactly those prices, blocks restored included.
    analysis, blocks, table, scores = setup
    low, high = solve_joint(analysis, table, blocks, scores, 0.65), solve_joint(analysis, table, blocks, scores, 0.8)
    assert {b.id for b in low.removed} - {b.id for b in high.removed}  # the path restores a block
    path = path_between(low, high, analysis, table, scores)
    predictor = Predictor(table, analysis, blocks)
    plans = [plan_on_path(low, path, k, predictor, scores, 0.7) for k in range(len(path.changes) + 1)]
    values = [kept_value(p, analysis, blocks, scores) for p in plans]
    assert any(c.block is not None for c in path.changes)
    for k, change in enumerate(path.changes):
        assert values[k + 1] - values[k] == pytest.approx(change.value, rel=1e-9, abs=1e-9), change.describe()


def test_layer_mode_values_the_blocks_it_keeps(setup):
    analysis, blocks, table, scores = setup
    layer = {b.id: float(i + 1) for i, b in enumerate(blocks)}
    plans = [solve_layer(analysis, table, blocks, layer, t) for t in (0.6, 0.8, 1.0)]
    values = [kept_value(p, analysis, blocks, scores, layer) for p in plans]
    assert values == sorted(values) and values[-1] == 0.0 and values[0] == -sum(layer[b.id] for b in plans[0].removed)


def test_the_widening_path_keeps_the_met_plans_blocks_removed_and_ends_at_full_width(setup):
    # The cliff between a met and a missed plan can be one block wide; the budget left then goes back into
    # the met plan's narrowed groups, best value per latency first, without restoring the block.
    from toolchain.solve.between import widening_path

    analysis, blocks, table, scores = setup
    low = solve_joint(analysis, table, blocks, scores, 0.65)
    assert low.removed and low.kept
    predictor = Predictor(table, analysis, blocks)
    path = widening_path(low, predictor, analysis, table, scores)
    assert path.changes and all(c.block is None for c in path.changes)
    plans = [plan_on_path(low, path, k, predictor, scores, 0.7) for k in range(len(path.changes) + 1)]
    assert plans[0].kept == low.kept and not plans[-1].kept  # from the met plan to every group at full width
    assert all([b.id for b in p.removed] == [b.id for b in low.removed] for p in plans)
    values = [kept_value(p, analysis, blocks, scores) for p in plans]
    assert values == sorted(values) and len(set(values)) == len(values)
    additive = [p.predicted.additive for p in plans]
    assert additive == sorted(additive)


def test_the_widening_bisection_ends_at_the_first_plan_predicted_over_the_budget(setup):
    # The widening path runs to full width, far past the budget; refine ends its bisection one step after the
    # first plan predicted over the budget, the predictions scaled by what the met plan measured against its own.
    from toolchain.refine import Attempt, _first_predicted_over
    from toolchain.solve.between import widening_path

    analysis, blocks, table, scores = setup
    low = solve_joint(analysis, table, blocks, scores, 0.65)
    predictor = Predictor(table, analysis, blocks)
    path = widening_path(low, predictor, analysis, table, scores)
    predicted = [plan_on_path(low, path, k, predictor, scores, 0.7).predicted.corrected
                 for k in range(1, len(path.changes) + 1)]
    assert len(predicted) >= 6 and predicted == sorted(predicted)
    met = Attempt(low, {"ratio": 0.9 * low.predicted.corrected, "ratio_se": 0.005}, 0, {}, 0.0)  # measured 10% fast
    budget = 0.9 * (predicted[2] + predicted[3]) / 2  # between the 3rd and 4th plans, as measured at `low`
    assert _first_predicted_over(met, path, predictor, scores, budget) == 4
    assert _first_predicted_over(met, path, predictor, scores, 0.99 * predicted[-1]) == len(path.changes)
