"""Regenerate the bad-input corpus (small files, committed): `python tests/corpus/make_corpus.py`.

Each file is named for the problem it carries. Larger inputs are made at test time instead.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def conv_model(dynamic_spatial: bool = False, custom_op: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    shape = [1, 3, "H", "W"] if dynamic_spatial else [1, 3, 8, 8]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv1.weight"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "conv2.weight")]
    nodes = [helper.make_node("Conv", ["input", "conv1.weight"], ["a"], name="/conv1/Conv", pads=[1, 1, 1, 1])]
    if custom_op:
        nodes.append(helper.make_node("Mystery", ["a"], ["b"], name="/mystery/Mystery", domain="com.example.secret"))
    else:
        nodes.append(helper.make_node("Relu", ["a"], ["b"], name="/relu/Relu"))
    nodes.append(helper.make_node("Conv", ["b", "conv2.weight"], ["output"], name="/conv2/Conv", pads=[1, 1, 1, 1]))
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example.secret", 1)] if custom_op else [])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=opsets)
    model.ir_version = 8
    return model


def no_conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "fc1.weight"),
             numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "fc2.weight")]
    nodes = [helper.make_node("MatMul", ["input", "fc1.weight"], ["a"], name="/fc1/MatMul"),
             helper.make_node("Relu", ["a"], ["b"], name="/relu/Relu"),
             helper.make_node("MatMul", ["b", "fc2.weight"], ["output"], name="/fc2/MatMul")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


class Payload:
    """Unpickling this calls os.system: a checkpoint carrying code."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/compress-pwned",))


def main() -> None:
    good = conv_model().SerializeToString()
    (HERE / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (HERE / "random_bytes.onnx").write_bytes(np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (HERE / "empty.onnx").write_bytes(b"")
    onnx.save(conv_model(custom_op=True), str(HERE / "custom_op.onnx"))
    onnx.save(no_conv_model(), str(HERE / "no_conv.onnx"))
    onnx.save(conv_model(dynamic_spatial=True), str(HERE / "dynamic_spatial.onnx"))
    plan = {"version": 1, "model": {}, "channels": {}, "remove": [], "round_to": 1}
    (HERE / "plan_wrong_version.json").write_text(json.dumps({**plan, "version": 99}))
    (HERE / "plan_other_model.json").write_text(json.dumps({**plan, "model": {"onnx_sha256": "0" * 64}}))
    (HERE / "plan_not_json.json").write_text("{version: 1,")
    (HERE / "plan_bad_types.json").write_text(json.dumps({**plan, "channels": {"conv1": {"count": "half"}}}))
    (HERE / "recipe_wrong_types.yaml").write_text(
        "model: builtin:resnet20\ndata: digits\nout: OUT\nprune:\n  budget: lots\nfinetune:\n  epochs: [1, 2]\n")
    (HERE / "recipe_not_yaml.yaml").write_text("model: [unclosed\n  : :\n")
    with open(HERE / "pickle_with_code.pt", "wb") as fh:
        pickle.dump({"conv1.weight": Payload()}, fh)
    (HERE / "random_checkpoint.safetensors").write_bytes(np.random.default_rng(3).integers(0, 256, 512, dtype=np.uint8).tobytes())


if __name__ == "__main__":
    main()
