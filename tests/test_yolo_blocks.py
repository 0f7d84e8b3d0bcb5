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
