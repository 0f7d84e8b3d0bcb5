"""Budget solvers on resnet20's real groups and blocks, with a deterministic MAC-proportional table.

The table here is a test fixture (latency taken proportional to MACs), so optimality can be checked
against brute force exactly; real tables come from `compress profile`.
"""
import itertools

import numpy as np
import pytest
import torch

from graphs.blocks import removable_blocks
from graphs.deps import analyze
from graphs.errors import InputError
from graphs.onnx_io import load_model
from deps_helpers import export
from tables import mac_table
from toolchain.latency.table import Table
from toolchain.latency.predict import LayerMap, Prediction, Predictor, mac_saving
from toolchain.solve.budget import _Knapsack, decision_from, _meet_corrected, solve_filter, solve_joint, solve_layer, width_options
from toolchain.solve.descend import narrower
from toolchain.solve.knapsack import RESOLUTION


@pytest.fixture(scope="module")
def setup(resnet20_onnx):
    analysis = analyze(load_model(resnet20_onnx))
    blocks = removable_blocks(analysis.model, analysis.shapes)
    table = mac_table(analysis, blocks)
    rng = np.random.default_rng(0)
    scores = {g.id: rng.random(g.channels) for g in analysis.groups}
    return analysis, blocks, table, scores


def additive(table, kept, removed):
    return 1.0 + sum(table.group_ratio(g, k) - 1 for g, k in kept.items()) + sum(table.block_ratio(b) - 1 for b in removed)


def value(scores, kept):
    return sum(np.sort(scores[g])[::-1][:k].sum() for g, k in kept.items())


@pytest.mark.parametrize("budget", [0.9, 0.7, 0.5])
def test_filter_knapsack_respects_budget_and_keeps_a_channel(setup, budget):
    analysis, _, table, scores = setup
    d = solve_filter(analysis, table, scores, budget, round_to=8)
    assert d.predicted.corrected <= budget + 1e-3
    assert all(len(spec["keep"]) >= 1 and len(spec["keep"]) % 8 == 0 for spec in d.plan.channels.values())
    assert d.plan.provenance["solver"] == "group-knapsack" and d.plan.provenance["budget"] == budget


BRUTE_GROUPS = ("layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1")  # inner groups of three different blocks


@pytest.mark.parametrize("budget", [0.95, 0.92, 0.9])
def test_filter_knapsack_matches_brute_force_on_three_groups(setup, budget):
    """Three groups that share no layer, so the per-layer model's prediction is the additive one and
    the knapsack's optimum is brute force's (the solver must find it; no case is skipped)."""
    analysis, _, table, scores = setup
    chosen = [analysis.group(gid) for gid in BRUTE_GROUPS]
    sub = Table(base_ms=1.0, widths=table.widths, groups={g.id: table.groups[g.id] for g in chosen})
    sub_analysis = type(analysis)(analysis.model, chosen, analysis.slices, analysis.fixes, analysis.sets,
                                  analysis.shapes, analysis.layouts)
    d = solve_filter(sub_analysis, sub, scores, budget, round_to=8)
    assert d.predicted.corrected == pytest.approx(d.predicted.additive, abs=2e-3)
    kept = {g.id: d.kept.get(g.id, g.channels) for g in chosen}
    combos = [dict(zip(BRUTE_GROUPS, combo)) for combo in itertools.product(*[width_options(g, 8) for g in chosen])]
    # The solver accepts a prediction up to 1e-3 over the budget (then measures); knapsack units round.
    slack = 1e-3 + len(chosen) / RESOLUTION
    best = max(value(scores, c) for c in combos if additive(sub, c, []) <= budget)
    best_slack = max(value(scores, c) for c in combos if additive(sub, c, []) <= budget + slack)
    assert any(additive(sub, c, []) > budget for c in combos)  # the budget binds
    assert additive(sub, kept, []) <= budget + slack
    assert best - 1e-9 <= value(scores, kept) <= best_slack + 1e-9


def test_halp_baseline_respects_budget(setup):
    analysis, _, table, scores = setup
    d = solve_filter(analysis, table, scores, 0.7, solver="halp")
    assert d.predicted.additive <= 0.7 + 2e-3
    assert all(len(spec["keep"]) >= 1 for spec in d.plan.channels.values())


def test_layer_budget_removes_least_important_first(setup):
    analysis, blocks, table, scores = setup
    importance = {b.id: float(i) for i, b in enumerate(blocks)}  # earliest = least important
    d = solve_layer(analysis, table, blocks, importance, 0.85)
    removed = d.plan.remove
    assert removed == [b.id for b in blocks][: len(removed)]
    assert d.predicted.corrected <= 0.85


def test_layer_budget_never_removes_a_block_that_measured_slower(setup):
    """mobilenet_v2 on ORT: removing its last block measured 1.037x. Removing it costs accuracy and
    time; the least important block here is that one, and it must stay."""
    analysis, blocks, table, scores = setup
    slow = blocks[0].id
    table = Table(table.base_ms, table.groups, {**table.blocks, slow: 1.037}, widths=table.widths)
    importance = {b.id: float(i) for i, b in enumerate(blocks)}
    d = solve_layer(analysis, table, blocks, importance, 0.85)
    assert slow not in d.plan.remove and d.plan.remove == [b.id for b in blocks[1:1 + len(d.plan.remove)]]
    everything = solve_layer(analysis, table, blocks, importance, d.smallest + 1e-6)
    assert set(everything.plan.remove) == {b.id for b in blocks[1:]}  # all but the slow one
    assert joint_removes(analysis, table, blocks, scores, slow) is False


def joint_removes(analysis, table, blocks, scores, bid) -> bool:
    return any(bid in solve_joint(analysis, table, blocks, scores, b, round_to=8).plan.remove for b in (0.8, 0.5, 0.3))


def inside(module, members):
    return any(module == m or module.startswith(m + ".") for m in members)


def objective(analysis, blocks, scores, kept, removed):
    """What every mode trades against latency: the importance kept. A group inside a removed block
    loses all of it; a group that continues outside it (a residual stream) loses its producers' share."""
    by_id = {b.id: b for b in blocks}
    total = 0.0
    for g in (g for g in analysis.groups if g.prunable):
        share = sum(sum(inside(m, by_id[r].members) for m in g.widths) for r in removed) / max(1, len(g.widths))
        if share >= 1:
            continue
        total += np.sort(scores[g.id])[::-1][:kept.get(g.id, g.channels)].sum() - share * scores[g.id].sum()
    return total


@pytest.fixture(scope="module")
def overhead_table(setup):
    """A table shaped like resnet20's on a CPU: narrowing saves half its MAC share, removing a block
    saves its MACs and 4 points of per-op overhead. Here depth and width both pay, so joint has to mix."""
    analysis, blocks, _, _ = setup
    return mac_table(analysis, blocks, width_share=0.5, block_overhead=0.04)


@pytest.mark.parametrize("budget, strictly", [(0.9, False), (0.8, False), (0.7, True), (0.6, True)])
def test_joint_beats_or_matches_each_mode_alone(setup, overhead_table, budget, strictly):
    """Same table, same scores, same budget: joint's options contain every filter-only and every
    layer-only plan, so it keeps at least as much importance as either; at 0.7 and 0.6 it mixes
    depth and width and keeps strictly more than both."""
    analysis, blocks, _, scores = setup
    table = overhead_table
    importance = {b.id: objective(analysis, blocks, scores, {}, []) - objective(analysis, blocks, scores, {}, [b.id])
                  for b in blocks}  # the layer criterion that values what the block's removal loses
    joint = solve_joint(analysis, table, blocks, scores, budget, round_to=8)
    width = solve_filter(analysis, table, scores, budget, round_to=8)
    depth = solve_layer(analysis, table, blocks, importance, budget)
    for d in (joint, width, depth):
        assert d.predicted.corrected <= budget + 1e-3
    ours = objective(analysis, blocks, scores, joint.kept, joint.plan.remove)
    others = [objective(analysis, blocks, scores, width.kept, []),
              objective(analysis, blocks, scores, {}, depth.plan.remove)]
    assert all(ours >= other - 1e-6 for other in others), (ours, others)
    if strictly:
        assert joint.plan.remove and joint.plan.channels and all(ours > other + 1.0 for other in others), (ours, others)
    assert joint.smallest <= width.smallest + 1e-9


def test_unreachable_budget_names_the_smallest(setup):
    analysis, blocks, table, scores = setup
    with pytest.raises(InputError, match=r"smallest latency .* reaches here: 0\.\d+"):
        solve_filter(analysis, table, scores, 0.01)
    with pytest.raises(InputError, match="must be in"):
        solve_joint(analysis, table, blocks, scores, 1.5)


def test_refinement_steps_stay_within_reach():
    """prune --budget's re-solve targets: a secant step on (target, measured), never below the
    smallest reachable latency, never a target already tried."""
    from toolchain.refine import next_target

    # Measured 0.42 at target 0.40 for a budget of 0.40: tighten, proportionally.
    assert next_target([(0.40, 0.42)], 0.40, 0.40) == pytest.approx(0.40 * 0.40 / 0.42)
    # Secant through two rising points lands where the line meets the budget.
    assert next_target([(0.40, 0.44), (0.36, 0.42)], 0.40, 0.36) == pytest.approx(0.32)
    # resnet50 layer-only: the step would go to 0.32, below the 0.349 that removing every block reaches.
    assert next_target([(0.40, 0.44), (0.36, 0.42)], 0.40, 0.36, floor=0.349) == pytest.approx(0.3491)
    # At the floor already: nothing left to try.
    assert next_target([(0.40, 0.44), (0.3491, 0.42)], 0.40, 0.3491, floor=0.349) is None
    # A discrete jump (resnet20 joint: 0.700 measured 0.705, 0.695 measured 0.646): the secant points back
    # at 0.700, already tried, so the bracket is split instead of keeping a plan pruned far below the budget.
    assert next_target([(0.700, 0.705), (0.695, 0.646)], 0.70, 0.695) == pytest.approx(0.6975)
    # ...until the bracket is too narrow to hold another target.
    assert next_target([(0.700, 0.705), (0.6995, 0.646)], 0.70, 0.6995) is None
    # Two nearly level points after a met one (yolo11n filter at 640): the secant would jump to 0.48;
    # the budget is enclosed by 0.600 (met) and 0.622 (missed), so the step stays between them.
    assert next_target([(0.600, 0.563), (0.639, 0.628), (0.622, 0.625)], 0.60, 0.622) == pytest.approx(0.611)


def test_joint_handles_a_block_with_no_prunable_group_inside(setup):
    """A block whose groups all live outside it (a dynamo-exported mobilenet_v2's inverted residual, whose
    group ids do not fall under the block's scope) has one kept option: it crashed the joint solver
    ('cannot reshape array of size 0')."""
    analysis, blocks, table, scores = setup
    groups = [g for g in analysis.groups if not g.id.startswith("layer1.0.")]
    sub = type(analysis)(analysis.model, groups, analysis.slices, analysis.fixes, analysis.sets, analysis.shapes,
                         analysis.layouts)
    d = solve_joint(sub, table, blocks, scores, 0.6, round_to=8)
    assert d.predicted.corrected <= 0.6 + 5e-3 and d.plan.remove  # (its prediction rounds to the knapsack units)



class ConcatIntoStream(torch.nn.Module):
    """A 6-wide stream that the stem writes whole and a concat of two branches (2 + 4 units) adds into."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.left, self.right = torch.nn.Conv2d(6, 2, 3, padding=1), torch.nn.Conv2d(6, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(6, 3, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + torch.cat([self.left(x), self.right(x)], 1))


def test_a_decision_predicts_the_widths_its_plan_keeps():
    """The prediction, which the refinement trusts, must be of the model that gets built. Asked to keep
    1 unit of a stream whose two concat branches must each keep one, the plan keeps 2 (Group.choose), and
    the decision says 2 and predicts 2: a decision predicting the asked width predicts a faster model."""
    analysis = analyze(export(ConcatIntoStream()))
    group = next(g for g in analysis.groups if len(g.producers) == 3)
    layers = LayerMap.build(analysis)
    table = Table(base_ms=1.0, widths={g.id: g.channels for g in analysis.groups})
    table.groups[group.id] = {k: 1.0 - mac_saving(layers, {group.id: k / group.channels}) for k in range(1, 6)}
    predictor = Predictor(table, analysis, [])
    scores = {group.id: np.array([1.0, 2.0, 6.0, 5.0, 4.0, 3.0])}  # the best unit is the right branch's
    d = decision_from(predictor, scores, {group.id: 1}, [], 1, 0.9, 0.0, {})
    assert d.plan.channels[group.id]["keep"] == [1, 2] and d.kept == {group.id: 2}
    assert d.predicted.corrected == pytest.approx(predictor.predict({group.id: 2}, []).corrected)
    assert d.predicted.corrected > predictor.predict({group.id: 1}, []).corrected


def test_a_budget_only_the_per_layer_model_reaches_gets_the_fastest_plan():
    """The refusal's floor is the per-layer model's prediction of the fastest plan, and the refinement
    asks for exactly that budget to measure it. Where that model predicts the plan below the additive sum
    of its table entries, the additive knapsack cannot reach the budget, yet the fastest plan fits it
    (Lite0 with a 0.75 width floor: refused at 0.35 on a predicted 0.408, then again at 0.408)."""
    deltas = [np.array([-0.3, -0.1, 0.0]), np.array([-0.2, -0.1, 0.0])]  # additive floor 0.5
    values = [np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])]

    class PerLayer:  # predicts every plan 0.05 below its additive sum: the fastest at 0.45
        def predict(self, kept, removed):
            additive = 1.0 + sum(deltas[item][option] for item, option in kept.items())
            return Prediction(additive=additive, corrected=additive - 0.05)

    def decode(picks):
        return dict(enumerate(picks)), []

    knapsack = _Knapsack(values, deltas)
    assert knapsack(0.45) is None  # the additive search alone has no plan for it
    kept, removed = _meet_corrected(knapsack, decode, PerLayer(), 0.45, (0.45, [0, 0]), values,
                                    lambda item, option: narrower(option))
    assert kept == {0: 0, 1: 0} and removed == []
    # A looser budget the knapsack reaches still gets the slowest plan that fits, not the fastest
    kept, _ = _meet_corrected(knapsack, decode, PerLayer(), 0.6, (0.45, [0, 0]), values,
                              lambda item, option: narrower(option))
    assert PerLayer().predict(kept, []).corrected == pytest.approx(0.55)
