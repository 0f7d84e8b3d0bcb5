"""Channel dependency groups and channel pruning on small hand-built CNNs, one per pattern: chains,
residuals, concat, depthwise/grouped convs, heads, squeeze-excitation and layer scale, round_to, bad
plans. Ops that move channels between tensors and positions: tests/test_deps_layouts.py.

Every pruning test checks PARITY: the pruned ONNX graph (graphs.surgery) and the torch module with
the same edits applied (toolchain.sync) must compute the same function on the same input, and the
pruned graph must really be narrower.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs.alignment import round_count
from graphs.deps import analyze
from graphs.errors import InputError
from graphs.onnx_io import model_sha256
from graphs.plan import Plan
from graphs.surgery import apply_plan

from deps_helpers import (H, W, Chain, ResNetTiny, cbr, export, group_of, inits, prune_and_check,
                          randomize_norms, torch_params)


# ----------------------------------------------------------------------------- plain chain

def test_chain_groups_and_parity():
    a, pruned, edits, m = prune_and_check(
        Chain(), (1, 3, H, W), lambda a, b: {"conv1": {"keep": [0, 2, 5]}, "conv2": {"count": 4}},
        {"conv1.weight": (3, 3, 3, 3), "conv1.bias": (3,), "bn1.running_mean": (3,),
         "conv2.weight": (4, 3, 3, 3), "conv3.weight": (4, 4, 1, 1)})
    assert [g.id for g in a.groups] == ["input", "conv1", "conv2", "conv3"]
    assert a.group("conv1").prunable and a.group("conv1").channels == 8
    assert set(a.group("conv1").members) == {"conv1", "bn1", "conv2"}
    assert set(a.group("conv2").members) == {"conv2", "bn2", "conv3"}
    assert edits.kept["conv1"] == [0, 2, 5]
    assert m.conv1.out_channels == 3 and m.bn1.num_features == 3 and m.conv2.in_channels == 3
    assert m.conv3.in_channels == 4


def test_kept_filters_are_the_original_ones():
    src = randomize_norms(Chain())
    ref = torch_params(src)
    _, pruned, _, _ = prune_and_check(src, (1, 3, H, W), lambda a, b: {"conv1": {"keep": [1, 6]}})
    got = inits(pruned)
    np.testing.assert_array_equal(got["conv1.weight"], ref["conv1.weight"][[1, 6]])
    np.testing.assert_array_equal(got["conv2.weight"], ref["conv2.weight"][:, [1, 6]])
    np.testing.assert_array_equal(got["bn1.running_var"], ref["bn1.running_var"][[1, 6]])


def test_graph_input_and_output_never_prunable():
    a = analyze(export(Chain()))
    assert a.group("input").prunable is False and a.group("input").reason == "graph input"
    assert a.group("conv3").prunable is False and a.group("conv3").reason == "graph output"
    with pytest.raises(InputError):
        apply_plan(a.model, Plan(channels={"conv3": {"count": 2}}), analysis=a)
    with pytest.raises(InputError):
        apply_plan(a.model, Plan(channels={"input": {"count": 2}}), analysis=a)


# ----------------------------------------------------------------------------- residual

def test_residual_identity_shares_one_group():
    def plan(a, b):
        g = group_of(a, "stem.0")
        return {g.id: {"keep": [0, 1, 3, 4, 7]}, group_of(a, "block1.conv1").id: {"count": 3}}

    a, pruned, edits, m = prune_and_check(ResNetTiny(), (1, 3, H, W), plan, {
        "stem.0.weight": (5, 3, 3, 3), "block1.conv1.weight": (3, 5, 3, 3), "block1.conv2.weight": (5, 3, 3, 3),
        "block2.conv2.weight": (5, 8, 3, 3), "block2.conv1.weight": (8, 5, 3, 3), "head.weight": (4, 5, 1, 1)})
    g = group_of(a, "stem.0")
    assert g.id == "stem.0" and g.prunable
    # the stem and every conv feeding the adds, plus all their consumers, are one group
    for member in ("stem.0", "stem.1", "block1.conv2", "block1.bn2", "block2.conv2", "block2.bn2",
                   "block1.conv1", "block2.conv1", "head"):
        assert member in g.members, member
    assert group_of(a, "block1.conv2") is g and group_of(a, "block2.conv2") is g
    inner = group_of(a, "block1.conv1")
    assert inner is not g and inner.prunable and set(inner.members) == {"block1.conv1", "block1.bn1", "block1.conv2"}
    assert m.block1.bn2.num_features == 5


def test_residual_projection_shortcut():
    def plan(a, b):
        return {group_of(a, "block2.conv2").id: {"count": 7}, group_of(a, "stem.0").id: {"count": 6}}

    a, pruned, edits, m = prune_and_check(ResNetTiny(project=True), (1, 3, H, W), plan, {
        "block2.conv2.weight": (7, 12, 3, 3), "block2.shortcut.0.weight": (7, 6, 1, 1),
        "block2.conv1.weight": (12, 6, 3, 3), "head.weight": (4, 7, 1, 1), "block2.shortcut.1.running_mean": (7,)})
    out = group_of(a, "block2.conv2")
    assert group_of(a, "block2.shortcut.0") is out and out.prunable and out.channels == 12
    assert "block2.shortcut.1" in out.members and "head" in out.members
    stem = group_of(a, "stem.0")
    assert stem is not out and "block2.shortcut.0" in stem.members  # its input side
    assert m.block2.shortcut[0].out_channels == 7 and m.block2.shortcut[0].in_channels == 6


# ----------------------------------------------------------------------------- concat

class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.b1 = nn.Conv2d(8, 4, 3, padding=1)
        self.b2 = nn.Conv2d(8, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.out = nn.Conv2d(10, 4, 3, padding=1)

    def forward(self, x):
        x = self.stem(x)
        return self.out(F.relu(self.bn(torch.cat([self.b1(x), self.b2(x)], 1))))


def test_concat_offsets():
    src = ConcatNet()
    randomize_norms(src)
    ref = torch_params(src)
    a, pruned, edits, m = prune_and_check(src, (1, 3, H, W), lambda a, b: {"b2": {"keep": [1, 4]}},
                                          {"b1.weight": (4, 8, 3, 3), "b2.weight": (2, 8, 1, 1),
                                           "bn.weight": (6,), "out.weight": (4, 6, 3, 3)})
    assert a.group("b1").prunable and a.group("b2").prunable
    assert a.group("b1").channels == 4 and a.group("b2").channels == 6
    assert "out" in a.group("b2").members and "bn" in a.group("b2").members
    got = inits(pruned)
    cols = [0, 1, 2, 3, 4 + 1, 4 + 4]
    np.testing.assert_array_equal(got["out.weight"], ref["out.weight"][:, cols])
    np.testing.assert_array_equal(got["bn.running_mean"], ref["bn.running_mean"][cols])


def test_concat_both_branches():
    prune_and_check(ConcatNet(), (1, 3, H, W), lambda a, b: {"b1": {"keep": [3]}, "b2": {"count": 5}},
                    {"out.weight": (4, 6, 3, 3)})


# ----------------------------------------------------------------------------- depthwise / grouped

class Depthwise(nn.Module):
    def __init__(self, mult=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.dw, self.bn2 = nn.Conv2d(8, 8 * mult, 3, padding=1, groups=8), nn.BatchNorm2d(8 * mult)
        self.pw = nn.Conv2d(8 * mult, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.pw(F.relu(self.bn2(self.dw(x))))


def test_depthwise_follows_input():
    a, pruned, edits, m = prune_and_check(Depthwise(), (1, 3, H, W), lambda a, b: {"conv1": {"count": 5}},
                                          {"conv1.weight": (5, 3, 3, 3), "dw.weight": (5, 1, 3, 3), "dw.bias": (5,),
                                           "bn2.weight": (5,), "pw.weight": (4, 5, 1, 1)})
    g = a.group("conv1")
    assert {"conv1", "bn1", "dw", "bn2", "pw"} <= set(g.members)
    assert not any(x.id == "dw" for x in a.groups)  # the depthwise conv creates no channels of its own
    dw = next(n for n in pruned.graph.node if n.op_type == "Conv" and n.input[1] == "dw.weight")
    assert onnx.helper.get_attribute_value(next(x for x in dw.attribute if x.name == "group")) == 5
    assert m.dw.groups == 5 and m.dw.in_channels == 5 and m.dw.out_channels == 5


def test_depthwise_multiplier_two():
    src = Depthwise(mult=2)
    randomize_norms(src)
    ref = torch_params(src)
    a, pruned, edits, m = prune_and_check(src, (1, 3, H, W), lambda a, b: {"conv1": {"keep": [0, 3, 6]}},
                                          {"dw.weight": (6, 1, 3, 3), "bn2.running_mean": (6,), "pw.weight": (4, 6, 1, 1)})
    g = a.group("conv1")
    assert g.channels == 8 and "dw" in g.members and "pw" in g.members
    np.testing.assert_array_equal(inits(pruned)["dw.weight"], ref["dw.weight"][[0, 1, 6, 7, 12, 13]])
    assert m.dw.groups == 3 and m.dw.out_channels == 6


class Grouped(nn.Module):
    def __init__(self, out_per_group=2):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        width = 4 * out_per_group
        self.gconv, self.bn2 = nn.Conv2d(8, width, 3, padding=1, groups=4), nn.BatchNorm2d(width)
        self.out = nn.Conv2d(width, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.out(F.relu(self.bn2(self.gconv(x))))


def test_grouped_conv_keeps_groups_equal_and_ties_its_two_sides():
    # 8 channels in 4 groups of 2, in and out: position j of every group, on both sides, is one unit
    # (narrowing one side alone runs slower on the grouped kernels; rules.conv)
    a, pruned, edits, m = prune_and_check(Grouped(), (1, 3, H, W), lambda a, b: {"conv1": {"keep": [1]}},
                                          {"conv1.weight": (4, 3, 3, 3), "gconv.weight": (4, 1, 3, 3), "out.weight": (4, 4, 1, 1)})
    assert a.group("conv1").channels == 2 and a.group("conv1").multiplicity == 4
    assert [g.id for g in a.groups if g.prunable] == ["conv1"]
    assert m.gconv.groups == 4 and m.gconv.in_channels == 4 and m.gconv.out_channels == 4
    assert len(edits.kept["conv1"]) == 1


def test_grouped_conv_with_unequal_sides_prunes_them_apart():
    # 2 channels per group in, 3 out: no position-for-position tie, two groups
    a, pruned, edits, m = prune_and_check(Grouped(out_per_group=3), (1, 3, H, W),
                                          lambda a, b: {"conv1": {"count": 1}, "gconv": {"keep": [1]}},
                                          {"conv1.weight": (4, 3, 3, 3), "gconv.weight": (4, 1, 3, 3), "out.weight": (4, 4, 1, 1)})
    assert a.group("gconv").channels == 3 and a.group("gconv").multiplicity == 4
    assert m.gconv.groups == 4 and m.gconv.in_channels == 4 and m.gconv.out_channels == 4


# ----------------------------------------------------------------------------- heads

class FlattenHead(nn.Module):
    def __init__(self, pool=False):
        super().__init__()
        self.pool = pool
        self.conv, self.bn = nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.BatchNorm2d(4)  # -> 4x4
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 if pool else 4 * 16, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        if self.pool:
            x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


def test_flatten_linear_block_mapping():
    src = FlattenHead()
    randomize_norms(src)
    ref = torch_params(src)
    a, pruned, edits, m = prune_and_check(src, (1, 3, H, W), lambda a, b: {"conv": {"keep": [1, 3]}},
                                          {"conv.weight": (2, 3, 3, 3), "fc.weight": (5, 32), "fc.bias": (5,)})
    assert "fc" in a.group("conv").members
    cols = list(range(16, 32)) + list(range(48, 64))
    np.testing.assert_array_equal(inits(pruned)["fc.weight"], ref["fc.weight"][:, cols])
    assert m.fc.in_features == 32


def test_avgpool_flatten_linear():
    a, pruned, edits, m = prune_and_check(FlattenHead(pool=True), (1, 3, H, W), lambda a, b: {"conv": {"count": 3}},
                                          {"fc.weight": (5, 3)})
    assert "fc" in a.group("conv").members
    assert a.group("fc").reason == "graph output" and not a.group("fc").prunable


# ----------------------------------------------------------------------------- squeeze-excitation, layer scale

class SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.out(x * s)


def test_squeeze_excitation():
    a, pruned, edits, m = prune_and_check(SE(), (1, 3, H, W), lambda a, b: {"conv": {"count": 5}, "fc1": {"count": 2}},
                                          {"conv.weight": (5, 3, 3, 3), "fc1.weight": (2, 5, 1, 1),
                                           "fc2.weight": (5, 2, 1, 1), "fc2.bias": (5,), "out.weight": (4, 5, 1, 1)})
    g = a.group("conv")
    assert g.prunable and {"conv", "bn", "fc1", "fc2", "out"} <= set(g.members)
    assert group_of(a, "fc2") is g
    assert a.group("fc1").prunable and set(a.group("fc1").members) == {"fc1", "fc2"}


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Module()
        self.scale.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(F.relu(self.conv(x) * self.scale.gamma))


def test_layer_scale_parameter():
    src = LayerScale()
    ref = torch_params(src)
    a, pruned, edits, m = prune_and_check(src, (1, 3, H, W), lambda a, b: {"conv": {"keep": [2, 3, 7]}},
                                          {"scale.gamma": (3, 1, 1), "out.weight": (4, 3, 1, 1)})
    assert "scale" in a.group("conv").members and a.group("conv").prunable
    np.testing.assert_array_equal(inits(pruned)["scale.gamma"], ref["scale.gamma"][[2, 3, 7]])
    assert tuple(m.scale.gamma.shape) == (3, 1, 1)


class TopLevelScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(self.conv(x) * self.gamma)


def test_layer_scale_top_level_parameter():
    prune_and_check(TopLevelScale(), (1, 3, H, W), lambda a, b: {"conv": {"count": 4}}, {"gamma": (4, 1, 1)})



# ----------------------------------------------------------------------------- round_to

def test_round_to_rounds_down_and_never_to_zero():
    assert round_count(5, 8, 1, 4) == 4
    assert round_count(1, 8, 1, 4) == 4
    assert round_count(7, 8, 1, 4) == 8
    assert round_count(3, 8, 1, 1) == 3
    a, pruned, edits, _ = prune_and_check(Chain(), (1, 3, H, W), lambda a, b: Plan(channels={"conv1": {"count": 5}}, round_to=4),
                                          {"conv1.weight": (4, 3, 3, 3)})
    assert len(edits.kept["conv1"]) == 4
    a, pruned, edits, _ = prune_and_check(Chain(), (1, 3, H, W), lambda a, b: Plan(channels={"conv1": {"count": 1}}, round_to=4),
                                          {"conv1.weight": (4, 3, 3, 3)})
    assert len(edits.kept["conv1"]) == 4


def test_round_to_wider_than_group_keeps_it_whole():
    _, _, edits, _ = prune_and_check(Chain(), (1, 3, H, W), lambda a, b: Plan(channels={"conv1": {"count": 3}}, round_to=16),
                                     {"conv1.weight": (8, 3, 3, 3)})
    assert len(edits.kept["conv1"]) == 8 and edits.notes


# ----------------------------------------------------------------------------- bad plans

@pytest.fixture(scope="module")
def chain_model():
    return export(randomize_norms(Chain()))


@pytest.mark.parametrize("plan, match", [
    (Plan(channels={"nope": {"count": 2}}), "unknown channel group"),
    (Plan(channels={"conv3": {"count": 2}}), "cannot be pruned"),
    (Plan(channels={"conv1": {"count": 9}}), "count"),
    (Plan(channels={"conv1": {"count": 0}}), "count"),
    (Plan(channels={"conv1": {"keep": [0, 8]}}), "keep"),
    (Plan(channels={"conv1": {"keep": [-1, 2]}}), "keep"),
    (Plan(channels={"conv1": {"keep": []}}), "keep"),
    (Plan(remove=["conv9"]), "unknown block"),
    (Plan(model={"onnx_sha256": "0" * 64}), "another model"),
], ids=["unknown-group", "unprunable", "count>channels", "count0", "keep-high", "keep-negative", "keep-empty",
        "unknown-block", "sha256"])
def test_bad_plans_raise_input_error(chain_model, plan, match):
    with pytest.raises(InputError, match=match):
        apply_plan(chain_model, plan)


def test_plan_with_matching_sha256_applies(chain_model):
    pruned, _ = apply_plan(chain_model, Plan(channels={"conv1": {"count": 4}}, model={"onnx_sha256": model_sha256(chain_model)}))
    assert inits(pruned)["conv1.weight"].shape == (4, 3, 3, 3)


class ConcatIntoResidual(nn.Module):
    """Two concat branches added to the stream: one group whose producers own disjoint units."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 6)
        self.b1, self.b2 = nn.Conv2d(6, 2, 1), nn.Conv2d(6, 4, 1)
        self.head = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + torch.cat([self.b1(x), self.b2(x)], 1))


def test_every_producer_keeps_a_channel():
    """Top-k over a concat group must not empty a branch (found by the property test)."""
    model = export(randomize_norms(ConcatIntoResidual()))
    a = analyze(model)
    g = next(g for g in a.groups if len(g.producers) > 1)
    units_of = {m: set(u.tolist()) for m, u in g.producers}
    scores = np.zeros(g.channels)
    weakest = min(units_of, key=lambda m: len(units_of[m]))  # a branch, not the stem that spans all units
    scores[[u for u in range(g.channels) if u not in units_of[weakest]]] = 1.0  # this branch scores 0
    kept = set(g.choose(scores, len(g.producers)).tolist())
    assert all(kept & units for units in units_of.values())
    with pytest.raises(InputError, match="keeps no channel of"):
        others = sorted(set(range(g.channels)) - units_of[weakest])
        apply_plan(model, Plan(channels={g.id: {"keep": others}}))


class DeepResidualStream(nn.Module):
    """One 16-wide stream that ten producers write (the stem and nine blocks), as in resnet56's stages."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(9))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def test_a_residual_stream_keeps_exactly_k_units_whatever_its_producer_count():
    """k=8 of a 16-wide stream with 10 producers keeps 8, not 10: every producer writes every unit,
    so any 8 keep each of them alive, and 10 is off the CPU's channel block (bench/channel_alignment.py)."""
    model = export(DeepResidualStream().eval())
    g = next(g for g in analyze(model).groups if len(g.producers) == 10)
    scores = np.random.default_rng(0).random(g.channels)
    assert g.choose(scores, 8).tolist() == sorted(np.argsort(-scores)[:8].tolist())
    pruned, _ = apply_plan(model, Plan(channels={g.id: {"count": 8}}))
    assert [list(i.dims) for i in pruned.graph.initializer if i.name == "stem.weight"] == [[8, 3, 3, 3]]
