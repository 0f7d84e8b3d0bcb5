"""Channel rules for ops that move channels between tensors and positions (graphs/layout_rules.py):
split/chunk/slice/shuffle, spatial ops between two convs, transpose conv and NHWC linear, and ops
without a rule (frozen with the reason). The other patterns: tests/test_deps_patterns.py.

Every pruning test checks PARITY, as in tests/test_deps_patterns.py.
"""
from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs.deps import analyze
from graphs.errors import InputError
from graphs.plan import Plan
from graphs.surgery import apply_plan

from deps_helpers import H, W, Chain, export, group_of, prune_and_check, randomize_norms


# ----------------------------------------------------------------------------- split / chunk / slice / shuffle

class ChunkGLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        a, b = torch.chunk(self.conv(x), 2, dim=1)
        return self.out(a * torch.sigmoid(b))


def test_chunk_channel_axis():
    a, pruned, edits, m = prune_and_check(ChunkGLU(), (1, 3, H, W), lambda a, b: {"conv": {"count": 2}},
                                          {"conv.weight": (4, 3, 3, 3), "out.weight": (4, 2, 1, 1)})
    g = a.group("conv")
    # a * b ties position i of both halves: 4 units of 2 filters
    assert g.prunable and g.channels == 4 and g.multiplicity == 2


class SplitBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.sizes = [3, 5]  # a python constant: sync cannot change it, the test does
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.left = nn.Conv2d(3, 4, 1)
        self.right = nn.Conv2d(5, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        a, b = torch.split(x, self.sizes, dim=1)
        return self.left(a) + self.right(b)


def test_split_unequal_parts_is_frozen_with_reason():
    """torch.split(x, [3, 5]): the sizes live in the model's code, which pruning cannot rewrite."""
    a = analyze(export(randomize_norms(SplitBranches())))
    g = a.group("conv")
    assert not g.prunable and "fixed in the model code" in g.reason
    with pytest.raises(InputError, match="cannot be pruned"):
        apply_plan(export(randomize_norms(SplitBranches())), Plan(channels={"conv": {"count": 4}}))


class SliceBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(2, 4, 1)
        self.right = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.left(x[:, :2]) + self.right(x[:, 2:])


def test_slice_channel_axis():
    """Hard-coded slice bounds: torch cannot follow a rewrite, so the producer is frozen, with a reason
    naming the Slice (the outcome today; pruning through it would need the model code rewritten)."""
    a = analyze(export(randomize_norms(SliceBranches())))
    g = a.group("conv")
    assert not g.prunable and "Slice" in g.reason and "bounds" in g.reason


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        n, c, h, w = x.shape
        x = x.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.out(x)


def test_channel_shuffle_prunes_with_parity():
    """Channel shuffle is supported: the producer stays prunable, in units of the shuffle's pairs."""
    module = randomize_norms(Shuffle())
    g = analyze(export(module)).group("conv")
    # the shuffle interleaves channel i of one half with channel i of the other: pairs are units
    assert g.prunable and not g.reason and (g.channels, g.multiplicity) == (4, 2)
    assert set(g.members) == {"conv", "bn", "out"}
    prune_and_check(Shuffle(), (1, 3, H, W), lambda a, b: {"conv": {"count": 2}},
                    {"conv.weight": (4, 3, 3, 3), "bn.weight": (4,), "out.weight": (4, 4, 1, 1)})


# ----------------------------------------------------------------------------- spatial ops between two convs

MIDDLE = {
    "maxpool": lambda x: F.max_pool2d(x, 2),
    "avgpool": lambda x: F.avg_pool2d(x, 2),
    "global_avgpool": lambda x: F.adaptive_avg_pool2d(x, 1),
    "reduce_mean": lambda x: x.mean((2, 3), keepdim=True),
    "reduce_mean_mul": lambda x: x * torch.sigmoid(x.mean((2, 3), keepdim=True)),
    "pad": lambda x: F.pad(x, (1, 1, 2, 0)),
    "reflect_pad": lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"),
    "nearest": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "bilinear": lambda x: F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False),
}


class Middle(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.fn(F.relu(self.bn1(self.conv1(x)))))



@pytest.mark.parametrize("op", sorted(MIDDLE))
def test_spatial_ops_pass_channels(op):
    a, *_ = prune_and_check(Middle(MIDDLE[op]), (1, 3, H, W), lambda a, b: {"conv1": {"keep": [0, 1, 5, 6, 7]}},
                            {"conv1.weight": (5, 3, 3, 3), "conv2.weight": (4, 5, 3, 3)})
    assert a.group("conv1").prunable and {"conv1", "bn1", "conv2"} <= set(a.group("conv1").members)


# ----------------------------------------------------------------------------- transpose conv, NHWC linear

class Deconv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.up, self.bn2 = nn.ConvTranspose2d(8, 6, 2, stride=2), nn.BatchNorm2d(6)
        self.out = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv(x)))
        return self.out(F.relu(self.bn2(self.up(x))))


def test_conv_transpose():
    a, pruned, edits, m = prune_and_check(Deconv(), (1, 3, H, W), lambda a, b: {"conv": {"count": 5}, "up": {"keep": [0, 5]}},
                                          {"up.weight": (5, 2, 2, 2), "up.bias": (2,), "bn2.weight": (2,), "out.weight": (4, 2, 3, 3)})
    assert "up" in a.group("conv").members and a.group("up").prunable
    assert set(a.group("up").members) == {"up", "bn2", "out"}
    assert m.up.in_channels == 5 and m.up.out_channels == 2


class NHWCBlock(nn.Module):
    """ConvNeXt-like: dwconv -> permute -> LayerNorm -> Linear -> GELU -> Linear -> permute, residual."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8)
        self.pw1, self.pw2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.ls = nn.Module()
        self.ls.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.pw2(F.gelu(self.pw1(y))) * self.ls.gamma
        return self.head(x + y.permute(0, 3, 1, 2))


def test_nhwc_linear_and_layernorm():
    a, pruned, edits, m = prune_and_check(
        NHWCBlock(), (1, 3, H, W), lambda a, b: {group_of(a, "pw1").id: {"count": 10}},
        {"pw1.weight": (10, 8), "pw1.bias": (10,), "pw2.weight": (8, 10)})
    hidden = group_of(a, "pw1")
    assert hidden.prunable and set(hidden.members) == {"pw1", "pw2"}
    stream = group_of(a, "stem")
    # LayerNorm normalises over the channels: the residual stream prunes with it (norm, layer scale included)
    assert stream.prunable and not stream.reason
    assert {"norm", "pw1", "pw2", "dw", "head", "ls"} <= set(stream.members)


def test_nhwc_stream_pruning():
    a = analyze(export(randomize_norms(NHWCBlock())))
    assert group_of(a, "stem").prunable, group_of(a, "stem").reason
    prune_and_check(NHWCBlock(), (1, 3, H, W), lambda a, b: {group_of(a, "stem").id: {"count": 5}},
                    {"norm.weight": (5,), "pw1.weight": (16, 5), "pw2.weight": (5, 16), "ls.gamma": (5,), "head.weight": (4, 5, 1, 1)})


# ----------------------------------------------------------------------------- unsupported ops

class PixelShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.out = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.out(F.pixel_shuffle(self.conv2(x), 2))


def test_unsupported_op_freezes_touched_groups():
    a, pruned, edits, m = prune_and_check(PixelShuffleNet(), (1, 3, H, W), lambda a, b: {"conv1": {"count": 3}},
                                          {"conv2.weight": (16, 3, 3, 3)})
    assert any(n.op_type == "DepthToSpace" for n in a.model.graph.node)
    g = a.group("conv2")
    assert not g.prunable and "DepthToSpace" in g.reason and "unsupported" in g.reason
    assert a.group("conv1").prunable  # untouched groups stay prunable
    with pytest.raises(InputError, match="cannot be pruned"):
        apply_plan(a.model, Plan(channels={"conv2": {"count": 8}}), analysis=a)


def test_custom_domain_op_does_not_crash():
    model = export(randomize_norms(Chain()))
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type, node.domain = "MyAct", "com.example"
            break
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    a = analyze(model)
    g = a.group("conv1")
    assert not g.prunable and "MyAct" in g.reason
    assert a.group("conv2").prunable
    with pytest.raises(InputError):
        apply_plan(model, Plan(channels={"conv1": {"count": 2}}), analysis=a)
