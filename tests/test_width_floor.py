"""`prune --max-prune-ratio`: no group narrows past a floor (toolchain/solve/budget.py WidthFloor).

On resnet20's real groups with the MAC-proportional table of test_solve_budget (a fixture: latency
taken proportional to MACs), so which plan each solver picks does not depend on host noise.
"""
import math

import pytest

from graphs.errors import InputError
from test_solve_budget import setup  # noqa: F401 (the module-scoped fixture)
from toolchain.refine import BudgetRequest, prune_to_budget
from toolchain.latency.config import ProfileConfig
from toolchain.solve.budget import Unreachable, WidthFloor, solve_filter, solve_joint, width_options


def kept_widths(analysis, decision) -> dict[str, int]:
    """Units each prunable group keeps in the decision's plan (full width when the plan leaves it)."""
    keep = {gid: len(spec["keep"]) for gid, spec in decision.plan.channels.items()}
    return {g.id: keep.get(g.id, g.channels) for g in analysis.groups if g.prunable}


def narrowest_share(analysis, decision) -> float:
    kept = kept_widths(analysis, decision)
    return min(kept[g.id] / g.channels for g in analysis.groups if g.prunable)


def test_min_kept_counts_from_the_unpruned_width():
    class G:  # a group as the solver sees it: an id and its units now
        def __init__(self, gid, channels):
            self.id, self.channels, self.multiplicity = gid, channels, 1

    floor = WidthFloor(0.75, {"a": 64, "b": 64})
    assert floor.min_kept(G("a", 64)) == 16  # a quarter of 64
    assert floor.min_kept(G("b", 32)) == 16  # a later stage: still a quarter of the unpruned 64
    assert floor.min_kept(G("c", 40)) == 10  # no origin recorded: its own width
    assert WidthFloor(0.75, {"a": 64}).min_kept(G("a", 8)) == 8  # already below: stays as it is
    assert WidthFloor().min_kept(G("a", 64)) == 1
    assert list(width_options(G("a", 16), 8, WidthFloor(0.75, {"a": 64}))) == [16]
    assert list(width_options(G("a", 64), 8, floor)) == [16, 24, 32, 40, 48, 56, 64]
    with pytest.raises(InputError, match="max-prune-ratio"):
        WidthFloor(0.0)
    with pytest.raises(InputError, match="max-prune-ratio"):
        WidthFloor(1.5)


def test_a_pattern_sets_its_groups_own_floor_and_the_smallest_matching_ratio_holds():
    class G:
        def __init__(self, gid, channels):
            self.id, self.channels, self.multiplicity = gid, channels, 1

    floor = WidthFloor(0.75, {}, {"conv_stem": 0.0, "blocks.1.*": 0.5, "blocks.1.0.*": 0.25})
    assert floor.min_kept(G("conv_stem", 32)) == 32  # 0: kept whole
    assert floor.min_kept(G("blocks.1.0.conv_pw", 96)) == 72  # both patterns match: 0.25 holds
    assert floor.min_kept(G("blocks.1.1.conv_pw", 144)) == 72  # half
    assert floor.min_kept(G("blocks.2.0.conv_pw", 144)) == 36  # no pattern: the global quarter
    assert floor.min_kept(G("conv_stem_2", 32)) == 8  # a glob matches the whole id, not a prefix
    assert list(width_options(G("conv_stem", 32), 8, floor)) == [32]
    assert floor.note() == {"max_prune_ratio": 0.75, "max_prune_ratio_for": floor.per_group}
    assert WidthFloor(1.0, {}, {"x*": 0.5}).note() == {"max_prune_ratio_for": {"x*": 0.5}}
    for bad in ({"x": 1.5}, {"x": -0.1}, {"": 0.5}):
        with pytest.raises(InputError, match="max-prune-ratio-for"):
            WidthFloor(1.0, {}, bad)


@pytest.mark.parametrize("solver", ["group-knapsack", "halp"])
def test_filter_solvers_keep_the_floor(setup, solver):  # noqa: F811
    analysis, _, table, scores = setup
    round_to = 8 if solver == "group-knapsack" else 1
    free = solve_filter(analysis, table, scores, 0.3, round_to, solver)
    assert narrowest_share(analysis, free) < 0.5  # without a floor some group goes below half: the test can fail
    floored = solve_filter(analysis, table, scores, 0.3, round_to, solver, width_floor=WidthFloor(0.5))
    kept = kept_widths(analysis, floored)
    for g in analysis.groups:
        if g.prunable:
            assert kept[g.id] >= math.ceil(g.channels / 2), g.id
    # HALP, the baseline, solves the additive sum only (SP-LAMP eq. 6); the group knapsack the per-layer model
    predicted = floored.predicted.additive if solver == "halp" else floored.predicted.corrected
    assert predicted <= 0.3 + 1e-3
    assert floored.plan.provenance["max_prune_ratio"] == 0.5
    assert "max_prune_ratio" not in free.plan.provenance


def test_joint_keeps_the_floor_and_may_still_remove_blocks(setup):  # noqa: F811
    analysis, blocks, table, scores = setup
    free = solve_joint(analysis, table, blocks, scores, 0.3, 8)
    assert narrowest_share(analysis, free) < 0.5
    floored = solve_joint(analysis, table, blocks, scores, 0.3, 8, width_floor=WidthFloor(0.5))
    assert floored.predicted.corrected <= 0.3 + 1e-3
    assert floored.removed, "a budget the floored widths cannot reach alone is met by removing blocks"
    kept = kept_widths(analysis, floored)  # a removed block's inner groups are not in the plan: full width
    for g in analysis.groups:
        if g.prunable:
            assert kept[g.id] >= math.ceil(g.channels / 2), g.id


def test_joint_keeps_a_pattern_s_groups_whole_while_the_others_narrow(setup):  # noqa: F811
    analysis, blocks, table, scores = setup
    stage1 = [g.id for g in analysis.groups if g.prunable and g.id.startswith("layer1.")]
    free = kept_widths(analysis, solve_joint(analysis, table, blocks, scores, 0.4, 8))
    assert any(free[gid] < analysis.group(gid).channels for gid in stage1)  # the test can fail
    floored = solve_joint(analysis, table, blocks, scores, 0.4, 8, width_floor=WidthFloor(1.0, {}, {"layer1.*": 0.0}))
    kept = kept_widths(analysis, floored)
    assert all(kept[gid] == analysis.group(gid).channels for gid in stage1)
    assert any(kept[g] < analysis.group(g).channels for g in kept if g not in stage1)
    assert floored.predicted.corrected <= 0.4 + 1e-3
    assert floored.plan.provenance["max_prune_ratio_for"] == {"layer1.*": 0.0}


def test_requests_the_floor_cannot_serve_are_refused_before_profiling(resnet20_onnx, tmp_path):
    store = tmp_path / "lut.sqlite"
    for request, message in [(BudgetRequest(budget=0.6, max_prune=0.0), "must be in"),
                             (BudgetRequest(budget=0.6, max_prune=0.5, mode="layer"), "filter or joint"),
                             (BudgetRequest(budget=0.6, max_prune_for={"layer1.*": 0.5}, mode="layer"), "filter or joint"),
                             (BudgetRequest(budget=0.6, max_prune_for={"layer9.*": 0.5}), "layer9.*: matches no channel group"),
                             (BudgetRequest(budget=0.6, max_prune_for={"layer1.*": 2.0}), "ratio in \\[0, 1\\]")]:
        with pytest.raises(InputError, match=message):
            prune_to_budget(str(resnet20_onnx), str(tmp_path / "o"), request, str(store), ProfileConfig(runs=3))
    assert not store.exists() and not (tmp_path / "o").exists()


def test_a_budget_out_of_reach_names_the_floor_that_set_it(setup):  # noqa: F811
    analysis, blocks, table, scores = setup
    for solve in (lambda budget, floor: solve_filter(analysis, table, scores, budget, 8, width_floor=floor),
                  lambda budget, floor: solve_joint(analysis, table, [], scores, budget, 8, width_floor=floor)):
        with pytest.raises(Unreachable) as floored:
            solve(0.2, WidthFloor(0.5))
        assert "--max-prune-ratio 0.5" in str(floored.value) and "keeping 50% of its width" in str(floored.value)
        # the same plan space without a floor reaches further: its refusal names no floor
        assert solve(floored.value.smallest - 0.01, WidthFloor()).predicted.corrected < floored.value.smallest
        with pytest.raises(Unreachable) as free:
            solve(0.01, WidthFloor())
        assert "max-prune-ratio" not in str(free.value)


def test_a_refusal_names_the_per_group_floor_that_set_it(setup):  # noqa: F811
    analysis, _, table, scores = setup
    floor = WidthFloor(1.0, {}, {"layer*": 0.0})  # every residual-stage group kept whole
    with pytest.raises(Unreachable) as refused:
        solve_filter(analysis, table, scores, 0.3, 8, width_floor=floor)
    assert "layer* keeping 100% of their width or more (--max-prune-ratio-for)" in str(refused.value)
    assert floor.unmatched(["conv1", "layer1.0.conv1"]) == [] and WidthFloor(1.0, {}, {"nosuch*": 0.5}).unmatched(
        ["conv1"]) == ["nosuch*"]
