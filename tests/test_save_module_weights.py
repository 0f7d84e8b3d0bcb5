"""toolchain.finetune.save_module_weights: values trained outside `finetune` go into a pruned DIR by name,
model.onnx and weights.safetensors alike, or nothing is written when the module no longer matches the graph."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.finetune import ParityLost, save_module_weights
from toolchain.pruned_dir import load_pruned_module


def _pruned(resnet20_onnx, tmp_path):
    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["prune", str(resnet20_onnx), "--ratio", "0.5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_trained_values_reach_both_files_and_parity_holds(resnet20_onnx, tmp_path):
    out = _pruned(resnet20_onnx, tmp_path)
    module = load_pruned_module(out)
    with torch.no_grad():
        module.conv1.weight.mul_(1.5)
        module.bn1.running_mean.add_(0.25)
    save_module_weights(out, module)

    weights = load_file(str(out / "weights.safetensors"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out / "model.onnx")).graph.initializer}
    for name in ("conv1.weight", "bn1.running_mean"):
        expected = module.state_dict()[name].numpy()
        np.testing.assert_array_equal(weights[name].numpy(), expected)
        np.testing.assert_array_equal(inits[name], expected)
    reloaded = load_pruned_module(out)
    assert torch.equal(reloaded.conv1.weight, module.conv1.weight)
    assert CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0


def test_a_module_that_no_longer_matches_the_graph_writes_nothing(resnet20_onnx, tmp_path):
    out = _pruned(resnet20_onnx, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    module = load_pruned_module(out)
    module.relu = torch.nn.Tanh()  # the same tensors, another function than the graph's
    with pytest.raises(ParityLost):
        save_module_weights(out, module)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
