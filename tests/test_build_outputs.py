"""build's accuracy check compares every output leaf, each relative to its own scale."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphs.onnx_io import cap_ir_version
from toolchain.build_check import accuracy_check
from toolchain.latency.backends import get_backend


def two_outputs(path, factor: float) -> None:
    """x (N,1,8,8) -> class scores (N,10) = flatten(x) @ W, and a second output x * factor."""
    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["scores"]),
         helper.make_node("Mul", ["x", "k"], ["second"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("second", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(factor, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cap_ir_version(model)
    onnx.save(model, str(path))


def test_a_difference_in_the_second_output_is_reported(tmp_path):
    two_outputs(tmp_path / "ref.onnx", 1.0)
    two_outputs(tmp_path / "art.onnx", 1.5)  # same class scores, second output off by half
    ort_be = get_backend("ort")
    with ort_be.prepare(tmp_path / "ref.onnx", 16) as ref, ort_be.prepare(tmp_path / "art.onnx", 16) as art, \
            ort_be.prepare(tmp_path / "ref.onnx", 16) as same:
        differs = accuracy_check(ref, art, "digits", (16, 1, 8, 8), 64, batch=16)
        equal = accuracy_check(ref, same, "digits", (16, 1, 8, 8), 64, batch=16)
    assert differs["top1_drop_points"] == 0 and differs["cosine_min"] > 0.9999  # the first output agrees
    first, second = differs["outputs"]
    assert first["relative_diff"] == 0.0 and second["relative_diff"] > 0.1
    assert differs["worst_relative_diff"] == second["relative_diff"]
    assert not differs["comparator"]["passed"]
    assert equal["worst_relative_diff"] == 0.0 and equal["comparator"]["passed"] and len(equal["outputs"]) == 2
