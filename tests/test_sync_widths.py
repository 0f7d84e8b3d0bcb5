"""Sync into modules that keep widths in Python attributes (toolchain.widths), and the post-sync check."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from graphs.errors import InputError
from graphs.surgery import Edits
from tests.test_cli import assert_bad_input, invoke
from toolchain.sync import apply_edits

MODELS = '''
import torch
from torch import nn

INPUT_SHAPE = (1, 3, 16, 16)


class Halves(nn.Module):
    """Splits a conv's output into two halves sized by a Python attribute, as ultralytics' C2PSA does."""

    def __init__(self):
        super().__init__()
        self.cv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.half = 16
        self.a = nn.Conv2d(16, 8, 1)
        self.b = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        a, b = self.cv1(x).split((self.half, self.half), 1)
        return torch.cat([self.a(a), self.b(b)], 1)


def halves():
    return Halves()


def c2f():
    from ultralytics.nn.modules import C2f, Conv

    return nn.Sequential(Conv(3, 32, 3, 1), C2f(32, 32, n=1, shortcut=True), Conv(32, 16, 1))


def psa():
    from ultralytics.nn.modules import C2PSA, Conv

    return nn.Sequential(Conv(3, 64, 3, 1), C2PSA(64, 64, n=1), Conv(64, 16, 1))
'''


@pytest.fixture(scope="module")
def models_py(tmp_path_factory):
    path = tmp_path_factory.mktemp("widths") / "models.py"
    path.write_text(MODELS)
    return path


def test_a_torch_name_containing_output_is_still_checked():
    module = nn.Sequential()
    module.add_module("x_output_proj", nn.Conv2d(3, 4, 1))
    kept = [(0, np.array([0, 1]))]
    apply_edits(module, Edits(slices={"x_output_proj.weight": kept, "/m/Constant_output_0": kept,
                                      "/m/Split_input1_pruned": kept}))
    assert module.x_output_proj.out_channels == 2  # sliced, widths fixed; ONNX-only names skipped
    with pytest.raises(InputError, match="no parameter y_output_proj.weight"):
        apply_edits(nn.Sequential(), Edits(slices={"y_output_proj.weight": kept}))


def test_width_kept_in_an_attribute_no_rule_knows_is_refused(models_py, tmp_path):
    onnx_path, out = tmp_path / "halves.onnx", tmp_path / "out"
    assert invoke("export", f"{models_py}:halves", "-o", onnx_path).exit_code == 0
    result = invoke("prune", onnx_path, "--ratio", "0.5", "-o", out)
    assert_bad_input(result, "cannot sync the pruned widths into Halves")
    assert "attributes half" in result.stderr and not out.exists()


def test_c2f_width_attribute_follows_the_pruned_split(models_py, tmp_path):
    pytest.importorskip("ultralytics")
    from toolchain.pruned_dir import load_pruned_module

    onnx_path, out = tmp_path / "c2f.onnx", tmp_path / "out"
    assert invoke("export", f"{models_py}:c2f", "--input-shape", "1,3,16,16", "-o", onnx_path).exit_code == 0
    result = invoke("prune", onnx_path, "--ratio", "0.5", "-o", out)
    assert result.exit_code == 0, result.output
    assert invoke("verify", out).exit_code == 0
    c2f = load_pruned_module(out)[1]
    assert c2f.c == c2f.cv1.conv.out_channels // 2 < 16
    x = torch.randn(2, 32, 16, 16)[:, : c2f.cv1.conv.in_channels]
    with torch.no_grad():  # forward_split (used by ultralytics' own exports) reads c; forward uses chunk(2)
        assert torch.allclose(c2f.forward_split(x), c2f(x), atol=1e-5)


def test_attention_reading_its_input_width_keeps_that_width(models_py, tmp_path):
    """ultralytics' Attention reshapes v to its input's channel count read at run time: the graph side
    must not prune that input's channels (the pruned ONNX failed in onnxruntime, yolo11n's model.10)."""
    pytest.importorskip("ultralytics")
    onnx_path, out = tmp_path / "psa.onnx", tmp_path / "out"
    assert invoke("export", f"{models_py}:psa", "--input-shape", "1,3,16,16", "-o", onnx_path).exit_code == 0
    groups = {g["id"]: g for g in json.loads(invoke("analyze", onnx_path, "--json").stdout)["groups"]}
    assert not groups["1.cv1.conv"]["prunable"] and "takes the channel count" in groups["1.cv1.conv"]["reason"]
    assert groups["1.m.0.ffn.0.conv"]["prunable"]
    result = invoke("prune", onnx_path, "--ratio", "0.5", "-o", out)
    assert result.exit_code == 0, result.output
    assert invoke("verify", out).exit_code == 0
