"""`compress prune FILE.onnx --budget B` with no torch source: weight criteria read the graph's own
initializers, the graph is pruned and checked against the masked original, and its latency measured."""
import json

import torch

from tests.test_cli import assert_bad_input, invoke
from toolchain.cifar_models import resnet20


def plain_export(path, dynamo: bool) -> None:
    torch.manual_seed(0)
    torch.onnx.export(resnet20().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=dynamo,
                      **({"external_data": False} if dynamo else {}))


def test_budget_without_torch_source(tmp_path):
    path, out = tmp_path / "plain.onnx", tmp_path / "out"
    plain_export(path, dynamo=False)
    result = invoke("prune", path, "--budget", "0.6", "--mode", "joint", "--runs", "6", "--store",
                    tmp_path / "lut.sqlite", "-o", out, "--json")
    assert result.exit_code == 0, result.output  # was: the ONNX model does not say which torch model it came from
    summary = json.loads(result.stdout)
    assert summary["onnx_only"] and summary["params"]["after"] < summary["params"]["before"]
    assert summary["masked_parity"]["max_abs_diff"] <= summary["masked_parity"]["tolerance"]
    assert summary["latency"]["measured"] < 0.95 and summary["latency"]["pruned_ms"] > 0
    assert invoke("verify", out).exit_code == 0


def test_budget_without_torch_source_refuses_what_needs_torch(tmp_path):
    path = tmp_path / "plain.onnx"
    plain_export(path, dynamo=False)
    store = ("--store", tmp_path / "lut.sqlite")
    result = invoke("prune", path, "--budget", "0.6", "--criterion", "taylor", "--data", "digits", *store, "-o", tmp_path / "o")
    assert_bad_input(result, "needs a forward pass of the torch model")
    assert_bad_input(invoke("prune", path, "--budget", "0.6", "--stages", "2", *store, "-o", tmp_path / "o"), "--stages > 1")
    assert not (tmp_path / "o").exists() and not (tmp_path / "lut.sqlite").exists()


def test_budget_without_torch_source_never_removes_a_layer(tmp_path):
    """A single-path layer whose input and output widths differ can only go by re-creating the next conv,
    which the masked original cannot check: the solvers must not offer it without a torch source (a
    dynamo-exported mobilenet_v2 was refused for it after the whole table was measured)."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10)).eval()
    path, out = tmp_path / "vgg.onnx", tmp_path / "out"
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False)
    blocks = json.loads(invoke("analyze", path, "--json").stdout)["blocks"]
    assert [b["kind"] for b in blocks] == ["layer"] and blocks[0]["width_in"] != blocks[0]["width_out"]
    result = invoke("prune", path, "--budget", "0.95", "--mode", "layer", "--runs", "4", "--store",
                    tmp_path / "lut.sqlite", "-o", out, "--json")
    assert "cannot be checked without the torch source" not in result.output  # was the refusal after profiling
    assert_bad_input(result, "layer pruning reaches", progress_lines=True)  # no block to remove: 1.0 of the model
    assert not out.exists()
