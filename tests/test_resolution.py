"""Output strides of channel groups (graphs/resolution.py) and the `stride<=N` selector of
`prune --max-prune-ratio-for` (toolchain/solve/width_floor.py), on real exported graphs."""
import math
from fnmatch import fnmatchcase

import pytest
import timm
import torchvision

from graphs.deps import analyze
from graphs.resolution import group_strides, is_selector, selects
from test_solve_budget import setup  # noqa: F401 (the module-scoped fixture)
from test_width_floor import kept_widths
from graphs.errors import InputError
from toolchain.export import export_onnx
from toolchain.refine import BudgetRequest
from toolchain.refine_checks import make_width_floor
from toolchain.solve.budget import solve_joint
from toolchain.solve.width_floor import WidthFloor

# The groups bench/accuracy_at_latency.py's joint-floor-early named by hand for Lite0 at 64x64: the ones
# at 32x32 and 16x16. `stride<=4` must select exactly these, or that bench's rows say nothing of the rule.
LITE0_EARLY = ["conv_stem", "blocks.0.*", "blocks.1.*", "blocks.2.0.conv_pw"]


@pytest.fixture(scope="module")
def lite0():
    # timm's TF-SAME padding is computed at run time: ONNX shape inference loses every size after the stem
    model = export_onnx(timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), (1, 3, 64, 64), None)
    return analyze(model)


def test_lite0_strides_follow_its_stages_though_shape_inference_lost_them(lite0):
    convs = [n.output[0] for n in lite0.model.graph.node if n.op_type == "Conv"]
    assert not any((lite0.shapes.get(name) or (0, 0, 0))[2] for name in convs)  # the case this handles
    strides = group_strides(lite0)
    assert strides["conv_stem"] == 2 and strides["blocks.0.0.conv_pw"] == 2
    assert strides["blocks.1.0.conv_pw"] == 2  # the expansion runs before the block's strided depthwise
    assert strides["blocks.1.0.conv_pwl"] == 4 and strides["blocks.2.0.conv_pw"] == 4
    assert strides["blocks.2.0.conv_pwl"] == 8 and strides["blocks.3.0.conv_pwl"] == 16
    assert strides["conv_head"] == 32 and "classifier" not in strides  # a Gemm has no feature map


def test_stride_selector_picks_lite0_s_high_resolution_groups_exactly(lite0):
    strides = group_strides(lite0)
    named = {g.id for g in lite0.groups if any(fnmatchcase(g.id, p) for p in LITE0_EARLY)}
    floor = WidthFloor(0.75, {}, {"stride<=4": 0.5}, strides)
    selected = {g.id for g in lite0.groups if floor.ratio_for(g) == 0.5}
    assert selected == named and len(named) == 6


def test_resnet18_strides_and_the_comparisons():
    analysis = analyze(export_onnx(torchvision.models.resnet18().eval(), (1, 3, 96, 128), None))
    strides = group_strides(analysis)  # a non-square input: the stride is the same along both sides
    assert strides["conv1"] == 2  # its group is the stem and layer1's trunk: the highest resolution wins
    assert strides["layer1.0.conv1"] == 4 and strides["layer2.0.conv1"] == 8
    assert strides["layer3.0.conv1"] == 16 and strides["layer4.0.conv1"] == 32
    assert selects("stride<=8", 8) and not selects("stride<8", 8) and selects("stride>=16", 32)
    assert selects("stride == 4", 4) and not selects("stride>4", 4) and not selects("stride<=4", None)
    assert is_selector("stride<=4") and not is_selector("stride*") and not is_selector("layer1.*")


def test_a_selector_matching_no_group_is_reported_unmatched(setup):  # noqa: F811
    analysis = setup[0]
    strides = group_strides(analysis)  # resnet20 at 32x32: strides 1, 2 and 4
    assert sorted(set(strides.values())) == [1, 2, 4]
    floor = WidthFloor(1.0, {}, {"stride>=8": 0.5, "stride<=1": 0.0, "layer3.*": 0.5}, strides)
    assert floor.unmatched([g.id for g in analysis.groups]) == ["stride>=8"]
    assert WidthFloor(1.0, {}, {"stride<=4": 0.5}).unmatched(["conv1"]) == ["stride<=4"]  # no strides given


def test_joint_keeps_the_full_resolution_groups_whole_while_the_others_narrow(setup):  # noqa: F811
    analysis, blocks, table, scores = setup
    strides = group_strides(analysis)
    early = [g.id for g in analysis.groups if g.prunable and strides.get(g.id) == 1]
    assert early and all(not gid.startswith(("layer2", "layer3")) for gid in early)
    free = kept_widths(analysis, solve_joint(analysis, table, blocks, scores, 0.4, 8))
    assert any(free[gid] < analysis.group(gid).channels for gid in early)  # the test can fail
    floor = WidthFloor(1.0, {}, {"stride<=1": 0.0}, strides)
    floored = solve_joint(analysis, table, blocks, scores, 0.4, 8, width_floor=floor)
    kept = kept_widths(analysis, floored)
    assert all(kept[gid] == analysis.group(gid).channels for gid in early)
    assert any(kept[g] < analysis.group(g).channels for g in kept if g not in early)
    assert floored.predicted.corrected <= 0.4 + 1e-3
    assert floored.plan.provenance["max_prune_ratio_for"] == {"stride<=1": 0.0}


def test_each_stage_s_floor_reads_the_strides_of_its_own_graph(setup):  # noqa: F811
    analysis = setup[0]
    origin = {g.id: g.channels for g in analysis.groups}
    floor = make_width_floor(BudgetRequest(budget=0.5, max_prune_for={"stride<=1": 0.0}), origin, analysis, True)
    assert floor.ratio_for(analysis.group("conv1")) == 0.0 and floor.ratio_for(analysis.group("layer3.0.conv1")) == 1.0
    with pytest.raises(InputError, match="stride>=8: matches no channel group"):
        make_width_floor(BudgetRequest(budget=0.5, max_prune_for={"stride>=8": 0.5}), origin, analysis, True)
    # a later stage does not re-check: a block the first stage removed may have held a pattern's only group
    later = make_width_floor(BudgetRequest(budget=0.5, max_prune_for={"stride>=8": 0.5}), origin, analysis, False)
    assert later.ratio_for(analysis.group("conv1")) == 1.0
