"""Outputs of any structure: flattened in the exporter's order, compared leaf by leaf, per-output tolerance."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from graphs.parity import parity, run_onnx
from toolchain.export import export_onnx
from toolchain.outputs import distill_loss, flatten_outputs


class Nested(nn.Module):
    """Returns the shapes of a detector: (tensor, {'a': tensor, 'feats': [tensor, tensor]}), an OrderedDict."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return (y.sum(1), OrderedDict(b=y * 2.0, feats=[y[:, :2], None, y.mean((2, 3))]), y - 1.0)


def test_flatten_matches_the_exporter_order():
    torch.manual_seed(0)
    module = Nested().eval()
    x = torch.randn(2, 3, 8, 8)
    model = export_onnx(module, (1, 3, 8, 8), None)
    got = run_onnx(model, {"input": x.numpy()})
    with torch.no_grad():
        leaves = [t.numpy() for t in flatten_outputs(module(x))]
    assert [a.shape for a in leaves] == [b.shape for b in got] == [(2, 8, 8), (2, 4, 8, 8), (2, 2, 8, 8), (2, 4), (2, 4, 8, 8)]
    assert parity(leaves, got).ok
    assert not parity(leaves[::-1], got).ok  # order matters: a reversed flattening is caught


def test_verify_compares_dict_and_nested_outputs():
    from toolchain.verify import verify_module

    torch.manual_seed(0)
    module = Nested().eval()
    model = export_onnx(module, (1, 3, 8, 8), None)
    assert verify_module(module, model, (1, 3, 8, 8)).parity.ok
    with torch.no_grad():
        module.conv.bias += 0.01  # the torch side drifts: every leaf but none of the graph moves
    assert not verify_module(module, model, (1, 3, 8, 8)).parity.ok


def test_parity_is_relative_per_output():
    big = np.full((4,), 1000.0)
    small = np.full((4,), 0.5)
    # 0.01 off on the [0, 1] output: within 1e-4 x 1000 of the big output's scale, not of its own.
    p = parity([big, small], [big, small + 0.01])
    assert not p.ok and p.tolerance == pytest.approx(1e-4) and p.scale == 1000.0
    assert parity([big, small], [big + 0.05, small]).ok


def test_distill_loss_compares_every_leaf():
    t = {"boxes": torch.randn(2, 4, 10) * 100, "feats": [torch.randn(2, 3, 5, 5)]}
    same = distill_loss(t, t)
    off = distill_loss(t, {"boxes": t["boxes"], "feats": [t["feats"][0] + 1.0]})
    assert float(same) == 0.0 and float(off) > 0.1
    with pytest.raises(ValueError):
        distill_loss(t, [t["boxes"]])
