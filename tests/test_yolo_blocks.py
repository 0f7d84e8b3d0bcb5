"""Removable blocks inside Split/Concat: ultralytics' bottlenecks (C2f) and PSABlock (C2PSA)."""
import json

import pytest

from tests.test_cli import invoke
from tests.test_sync_widths import models_py  # noqa: F401  (the fixture)

pytest.importorskip("ultralytics")


@pytest.mark.parametrize("factory, block", [("c2f", "1.m.0"), ("psa", "1.m.0")])
def test_block_behind_a_runtime_split_is_removable(models_py, tmp_path, factory, block):  # noqa: F811
    onnx_path, out = tmp_path / f"{factory}.onnx", tmp_path / "out"
    assert invoke("export", f"{models_py}:{factory}", "--input-shape", "1,3,16,16", "-o", onnx_path).exit_code == 0
    blocks = json.loads(invoke("analyze", onnx_path, "--json").stdout)["blocks"]
    assert [(b["id"], b["kind"]) for b in blocks] == [(block, "residual")]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "channels": {}, "remove": [block]}))
    result = invoke("prune", onnx_path, "--plan", plan, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"]["after"] < json.loads(result.stdout)["params"]["before"]
    assert invoke("verify", out).exit_code == 0


SPPF_PSA = '''
from torch import nn


def sppf_psa():
    from ultralytics.nn.modules import C2PSA, SPPF, Conv

    return nn.Sequential(Conv(3, 64, 3, 1), SPPF(64, 64), C2PSA(64, 64, n=1), Conv(64, 16, 1))
'''


def test_sppf_and_attention_are_listed_as_not_removable(tmp_path):
    (tmp_path / "m.py").write_text(SPPF_PSA)
    onnx_path = tmp_path / "m.onnx"
    assert invoke("export", f"{tmp_path / 'm.py'}:sppf_psa", "--input-shape", "1,3,16,16", "-o", onnx_path).exit_code == 0
    data = json.loads(invoke("analyze", onnx_path, "--json").stdout)
    assert [b["id"] for b in data["blocks"]] == ["2.m.0"]  # the PSABlock (x + attn(x), then x + ffn(x))
    why = {n["id"]: n["reason"] for n in data["not_removable"]}
    assert "no identity shortcut" in why["1"]  # SPPF: same shape in and out, no x + f(x)
    assert why["2.m.0.attn"].startswith("attention") and "enclosing block 2.m.0 is removable" in why["2.m.0.attn"]
    assert "its blocks 2.m.0 are removable" in why["2"]  # C2PSA itself
    text = invoke("analyze", onnx_path).stdout
    assert "not removable" in text and "2.m.0.attn" in text
