"""Backends: registry, onnxruntime provider checks and inputs, torch eager, TensorRT on a GPU only."""
import importlib.util

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from graphs.errors import InputError
from toolchain.latency.backends import get_backend, known_backends
from toolchain.latency.measure import time_runner


def tiny_onnx(path, batch="N"):
    """A 1x1 conv, built with onnx.helper: no export needed to exercise the runners."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.ones(12, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def test_unknown_backend_lists_known():
    assert known_backends() == ["ort", "tensorrt", "torch"]
    with pytest.raises(InputError, match="unknown backend 'openvino'.*ort, tensorrt, torch"):
        get_backend("openvino")


def test_ort_runs_with_batch_replaced(tmp_path):
    backend = get_backend("ort", threads=1)
    runner = backend.prepare(tiny_onnx(tmp_path / "t.onnx"), batch=3)
    (y,) = runner.run()
    assert y.shape == (3, 4, 8, 8)
    assert time_runner(runner, warmup=1, runs=5).count == 5
    dev = backend.device()
    assert dev["runtime"] == "onnxruntime" and dev["provider"] == "CPUExecutionProvider"
    assert dev["threads"] == 1 and dev["runtime_version"]
    # bytes work as well as paths, and the fixed input is seeded: same input, same output
    again = backend.prepare((tmp_path / "t.onnx").read_bytes(), batch=3)
    np.testing.assert_array_equal(again.run()[0], y)


def test_ort_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(InputError, match="fixed batch of 1"):
        get_backend("ort").prepare(tiny_onnx(tmp_path / "b1.onnx", batch=1), batch=2)
    with pytest.raises(InputError, match="not found"):
        get_backend("ort").prepare(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot load"):
        get_backend("ort").prepare(tmp_path / "junk.onnx")
    with pytest.raises(InputError, match="unknown onnxruntime provider"):
        get_backend("ort", provider="rocm")


def test_ort_cuda_on_cpu_machine_is_refused(tmp_path):
    # onnxruntime-gpu would list CUDA as *available* and silently run on the CPU: we check the session
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError, match="CUDAExecutionProvider is not active"):
        get_backend("ort", provider="cuda").prepare(tiny_onnx(tmp_path / "t.onnx"))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_missing_tensorrt_names_the_install():
    with pytest.raises(InputError, match="pip install tensorrt"):
        get_backend("tensorrt")


def test_torch_backend_times_a_module(tmp_path):
    backend = get_backend("torch", device="cpu", threads=1)
    runner = backend.prepare(torch.nn.Conv2d(3, 4, 1), batch=2, input_shape=(1, 3, 8, 8))
    assert runner.run().shape == (2, 4, 8, 8)
    assert backend.device()["runtime"] == "torch"
    with pytest.raises(InputError, match="nn.Module"):
        backend.prepare(tiny_onnx(tmp_path / "t.onnx"))


# ---- TensorRT: only on a GPU runner with TensorRT (pytest -m gpu) ----

@pytest.fixture
def trt_env():
    trt = pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return trt


@pytest.mark.gpu
def test_tensorrt_fp32_engine_builds_and_times(trt_env, tmp_path):
    cache = tmp_path / "timing.cache"
    backend = get_backend("tensorrt", precision="fp32", timing_cache=cache)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1)).eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    runner = backend.prepare(path, batch=2)
    stats = time_runner(runner, warmup=5, runs=20)
    assert stats.count == 20 and stats.median > 0
    assert cache.is_file() and cache.stat().st_size > 0  # persisted for the next build
    out = runner.buffers["y"]
    with torch.no_grad():
        ref = net.cuda()(runner.buffers["x"])
    assert torch.allclose(out, ref, atol=1e-2, rtol=1e-2)  # TF32 on both sides
    dev = backend.device()
    assert dev["runtime"] == "tensorrt" and dev["runtime_version"] == trt_env.__version__
    runner.close()


@pytest.mark.gpu
def test_tensorrt_refuses_int8_without_qdq(trt_env, tmp_path):
    with pytest.raises(InputError, match="QDQ"):
        get_backend("tensorrt", precision="int8", timing_cache=tmp_path / "c").prepare(
            tiny_onnx(tmp_path / "t.onnx"))
