"""compress prune/verify on ONNX files with no torch source: plain torch.onnx.export (BatchNorm folded),
legacy and dynamo exporters; checked against the original graph with the same channels masked."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from tests.test_cli import assert_bad_input, invoke
from toolchain.cifar_models import resnet20


@pytest.fixture(scope="module", params=["legacy", "dynamo"])
def plain_onnx(request, tmp_path_factory):
    """builtin resnet20 as a user would export it: eval mode, default options (BN folded into Conv)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("plain") / f"resnet20_{request.param}.onnx"
    torch.onnx.export(resnet20().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=request.param == "dynamo",
                      **({"external_data": False} if request.param == "dynamo" else {}))
    model = onnx.load(str(path))
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded: no torch join key
    return path


def test_prune_and_verify_without_torch_source(plain_onnx, tmp_path):
    out = tmp_path / "out"
    result = invoke("prune", plain_onnx, "--ratio", "0.3", "--round-to", "8", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["onnx_only"] and summary["params"]["after"] < 0.8 * summary["params"]["before"]
    assert summary["masked_parity"]["max_abs_diff"] <= summary["masked_parity"]["tolerance"]
    result = invoke("verify", out, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"], result.output

    model = onnx.load(str(out / "model.onnx"))  # one pruned weight nudged: the masked original disagrees
    init = next(i for i in model.graph.initializer if len(i.dims) == 4 and i.dims[0] > 8)
    values = numpy_helper.to_array(init).copy()
    values[0] += 0.05 * np.abs(values).max()
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(out / "model.onnx"))
    assert invoke("verify", out).exit_code == 1


def _save(tmp_path, nodes, inits, name, shape=(1, 4, 8, 8)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("x.custom", 1)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_onnx_without_initializers_is_bad_input(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Sigmoid", ["h"], ["y"])], [],
                 "no_inits.onnx")
    assert_bad_input(invoke("prune", path, "--ratio", "0.3", "-o", tmp_path / "out"), "no weight initializers")
    assert not (tmp_path / "out").exists()


def test_unsupported_ops_on_every_path_is_bad_input(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Mystery", ["x"], ["a"], domain="x.custom"), helper.make_node("Conv", ["a", "w"], ["b"]),
             helper.make_node("Mystery", ["b"], ["y"], domain="x.custom")]
    path = _save(tmp_path, nodes, [w], "custom.onnx")
    assert_bad_input(invoke("prune", path, "--ratio", "0.3", "-o", tmp_path / "out"), "no channel group can be pruned")
    assert not (tmp_path / "out").exists()


def test_dynamo_export_has_residual_blocks_named_by_module(plain_onnx, tmp_path):
    """Dynamo node names carry no scope ('node_add'); the blocks come from its name_scopes metadata."""
    blocks = [b["id"] for b in json.loads(invoke("analyze", plain_onnx, "--json").stdout)["blocks"]]
    assert "layer1.1" in blocks and "layer3.2" in blocks, blocks
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "channels": {}, "remove": ["layer1.1", "layer3.2"]}))
    out = tmp_path / "out"
    result = invoke("prune", plain_onnx, "--plan", plan, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["removed"]) == 2
    assert invoke("verify", out).exit_code == 0


def test_open_spatial_dims_are_bad_input(tmp_path):
    """Masked parity needs one input size: an ONNX whose H and W are symbolic is refused (a symbolic batch
    is fine, it runs at 1)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])]
    path = _save(tmp_path, nodes, [w, w2], "open_hw.onnx", shape=("N", 4, "H", "W"))
    assert_bad_input(invoke("prune", path, "--ratio", "0.5", "-o", tmp_path / "out"), "symbolic dims")
    assert not (tmp_path / "out").exists()
    path = _save(tmp_path, nodes, [w, w2], "open_n.onnx", shape=("N", 4, 8, 8))
    result = invoke("prune", path, "--ratio", "0.5", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["model"]["input_shape"] == [1, 4, 8, 8]
