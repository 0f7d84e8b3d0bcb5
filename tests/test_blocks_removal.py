"""Removable blocks (residual with identity shortcut, single-path layers) and their removal, with parity."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from deps_helpers import (  # noqa: E402
    H, W, ResNetTiny, cbr, export, inits, prune_and_check, randomize_norms, torch_params,
)

from graphs.blocks import removable_blocks  # noqa: E402
from graphs.deps import analyze  # noqa: E402

from graphs.errors import InputError  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.zoo import build_model  # noqa: E402


def blocks_of(module, input_shape=(1, 3, H, W), model=None):
    a = analyze(model if model is not None else export(randomize_norms(module), input_shape))
    return {b.id: b for b in removable_blocks(a.model, a.shapes)}


def conv_nodes(model):
    return [n for n in model.graph.node if n.op_type == "Conv"]


# ----------------------------------------------------------------------------- residual

def test_residual_identity_blocks_listed():
    blocks = blocks_of(ResNetTiny())
    assert [b for b in blocks] == ["block1", "block2"]
    b = blocks["block1"]
    assert b.kind == "residual" and b.members == ["block1"] and b.width_in == b.width_out == 8


def test_residual_identity_removed_with_parity():
    a, pruned, edits, m = prune_and_check(ResNetTiny(), (1, 3, H, W), lambda a, b: Plan(remove=["block1"]))
    assert isinstance(m.block1, nn.Identity) and not isinstance(m.block2, nn.Identity)
    names = set(inits(pruned))
    assert not any(n.startswith("block1.") for n in names) and "block2.conv1.weight" in names
    assert len(conv_nodes(pruned)) == 4  # stem, block2 x2, head
    assert edits.removed == ["block1"]


def test_projection_block_not_listed():
    blocks = blocks_of(ResNetTiny(project=True))
    assert "block1" in blocks and "block2" not in blocks
    model = export(randomize_norms(ResNetTiny(project=True)))
    with pytest.raises(InputError, match="unknown block"):
        apply_plan(model, Plan(remove=["block2"]))


def test_residual_removed_and_channels_pruned():
    def plan(a, b):
        return Plan(channels={"stem.0": {"count": 5}, "block2.conv1": {"count": 3}}, remove=["block1"])

    a, pruned, edits, m = prune_and_check(ResNetTiny(), (1, 3, H, W), plan,
                                          {"stem.0.weight": (5, 3, 3, 3), "block2.conv1.weight": (3, 5, 3, 3),
                                           "block2.conv2.weight": (5, 3, 3, 3), "head.weight": (4, 5, 1, 1)})
    assert isinstance(m.block1, nn.Identity)


# ----------------------------------------------------------------------------- VGG-style layers

class VGGTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(cbr(3, 8), cbr(8, 8), cbr(8, 16), cbr(16, 16), nn.MaxPool2d(2), cbr(16, 16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_vgg_layers_listed():
    blocks = blocks_of(VGGTiny())
    assert "features.0" not in blocks  # fed by the graph input
    for bid in ("features.1", "features.2", "features.3"):
        assert blocks[bid].kind == "layer" and blocks[bid].members == [bid], bid
    assert (blocks["features.2"].width_in, blocks["features.2"].width_out) == (8, 16)
    assert blocks["features.2"].next_weight == "features.3.0.weight"


def test_vgg_equal_width_layer_removed_next_conv_keeps_weights():
    src = randomize_norms(VGGTiny())
    ref = torch_params(src)
    a, pruned, edits, m = prune_and_check(src, (1, 3, H, W), lambda a, b: Plan(remove=["features.1"]),
                                          {"features.2.0.weight": (16, 8, 3, 3)})
    assert isinstance(m.features[1], nn.Identity)
    assert not edits.reinit
    np.testing.assert_array_equal(inits(pruned)["features.2.0.weight"], ref["features.2.0.weight"])
    assert not any(n.startswith("features.1.") for n in inits(pruned))


def test_vgg_width_changing_layer_removed_next_conv_reinitialised():
    src = randomize_norms(VGGTiny())
    ref = torch_params(src)
    plan = Plan(remove=["features.2"])
    a, pruned, edits, m = prune_and_check(src, (1, 3, H, W), lambda a, b: plan, {"features.3.0.weight": (16, 8, 3, 3)})
    assert isinstance(m.features[2], nn.Identity)
    assert list(edits.reinit) == ["features.3.0.weight"]
    new = inits(pruned)["features.3.0.weight"]
    np.testing.assert_array_equal(new, edits.reinit["features.3.0.weight"])
    np.testing.assert_array_equal(m.features[3][0].weight.detach().numpy(), new)
    assert m.features[3][0].in_channels == 8
    assert not np.allclose(new, ref["features.3.0.weight"][:, :8])  # fresh, not a slice
    assert np.abs(new).max() <= 1 / np.sqrt(8 * 9) + 1e-6  # torch's default conv init bound
    assert edits.reinit_record["features.3.0"]["in_channels"] == 8
    assert not plan.reinit  # surgery reports what it did; it does not write into the decision


def test_two_consecutive_layers_removed():
    a, pruned, edits, m = prune_and_check(VGGTiny(), (1, 3, H, W), lambda a, b: Plan(remove=["features.1", "features.2"]),
                                          {"features.3.0.weight": (16, 8, 3, 3)})
    assert isinstance(m.features[1], nn.Identity) and isinstance(m.features[2], nn.Identity)
    assert sorted(edits.removed) == ["features.1", "features.2"]
    assert list(edits.reinit) == ["features.3.0.weight"]


def test_layer_removal_with_channel_pruning():
    def plan(a, b):
        return Plan(channels={"features.0.0": {"count": 5}, "features.3.0": {"count": 12}}, remove=["features.2"])

    a, pruned, edits, m = prune_and_check(VGGTiny(), (1, 3, H, W), plan,
                                          {"features.0.0.weight": (5, 3, 3, 3), "features.1.0.weight": (8, 5, 3, 3),
                                           "features.3.0.weight": (12, 8, 3, 3), "features.5.0.weight": (16, 12, 3, 3)})
    assert m.features[3][0].in_channels == 8 and m.features[3][0].out_channels == 12


def test_layer_removal_after_pruning_its_input_group():
    """Equal widths before pruning, unequal after: the next conv follows the pruned entry width."""
    def plan(a, b):
        return Plan(channels={"features.0.0": {"count": 5}}, remove=["features.1"])

    a, pruned, edits, m = prune_and_check(VGGTiny(), (1, 3, H, W), plan, {"features.2.0.weight": (16, 5, 3, 3)})
    assert m.features[2][0].in_channels == 5


# ----------------------------------------------------------------------------- builtin models

@pytest.fixture(scope="module")
def resnet20():
    module = randomize_norms(build_model("builtin:resnet20"))
    model = export(module, (1, 3, 32, 32))
    return module, blocks_of(module, model=model), model


def test_resnet20_blocks(resnet20):
    _, blocks, _ = resnet20
    residual = [b for b in blocks.values() if b.kind == "residual"]
    ids = {b.id for b in residual}
    assert {"layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"} == ids
    assert "layer2.0" not in blocks and "layer3.0" not in blocks


def test_resnet20_block_removed_with_parity(resnet20):
    module, _, model = resnet20
    a, pruned, edits, m = prune_and_check(module, (1, 3, 32, 32), lambda a, b: Plan(remove=["layer1.1", "layer3.2"]),
                                          model=model)
    assert isinstance(m.layer1[1], nn.Identity) and isinstance(m.layer3[2], nn.Identity)


@pytest.fixture(scope="module")
def vgg19():
    module = randomize_norms(build_model("builtin:vgg19_bn"))
    model = export(module, (1, 3, 32, 32))
    return module, blocks_of(module, model=model), model


def test_vgg19_blocks(vgg19):
    _, blocks, _ = vgg19
    assert blocks and all(b.kind == "layer" for b in blocks.values())
    widths = {(b.width_in, b.width_out) for b in blocks.values()}
    assert any(i == o for i, o in widths) and any(i != o for i, o in widths)


def test_vgg19_layer_removed_with_parity(vgg19):
    module, blocks, model = vgg19
    equal = next(b for b in blocks.values() if b.width_in == b.width_out)
    changing = next(b for b in blocks.values() if b.width_in != b.width_out and b.next_weight)
    a, pruned, edits, m = prune_and_check(module, (1, 3, 32, 32), lambda a, b: Plan(remove=[equal.id, changing.id]),
                                          model=model)
    for bid in (equal.id, changing.id):
        assert isinstance(m.get_submodule(bid), nn.Identity), bid
    assert changing.next_weight in edits.reinit
