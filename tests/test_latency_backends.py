"""Backends behind one runner Protocol: registry and options, onnxruntime (CPU here; CUDA/TensorRT EPs
on a GPU), the torch backend on the Plan-applied module, TensorRT through Polygraphy on a GPU only."""
import importlib.util
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from graphs.deps import analyze
from graphs.errors import InputError
from graphs.onnx_io import load_model, model_sha256
from graphs.plan import Plan
from toolchain.latency.backends import ModuleSource, OnnxSource, PlanSource, get_backend, known_backends
from toolchain.latency.measure import time_runner


def tiny_onnx(path, batch="N"):
    """A 1x1 conv, built with onnx.helper: no export needed to exercise the runners."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.arange(12, dtype=np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def test_registry_and_uniform_options():
    assert known_backends() == ["ort", "tensorrt", "torch"]
    with pytest.raises(InputError, match="unknown backend 'openvino'.*ort, tensorrt, torch"):
        get_backend("openvino")
    # one option set serves every backend: host tuning the torch runtime lacks (spinning) is dropped...
    assert get_backend("torch", provider="cpu", spinning=False, precision="fp32").name == "torch"
    # ...an option it cannot honour is not silently ignored
    with pytest.raises(InputError, match="no option 'timing_cache'"):
        get_backend("torch", timing_cache="/tmp/t.cache")


def test_ort_runner_protocol(tmp_path):
    backend = get_backend("ort", threads=1)
    with backend.prepare(tiny_onnx(tmp_path / "t.onnx"), batch=3) as runner:
        assert set(runner.inputs) == {"x"} and runner.inputs["x"][0] == (3, 3, 8, 8)
        x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
        (y,) = runner.infer({"x": x})  # any feed, through Polygraphy's OnnxrtRunner
        np.testing.assert_allclose(y, np.einsum("oc,nchw->nohw", np.arange(12, dtype=np.float32).reshape(4, 3), x),
                                   rtol=1e-5, atol=1e-5)
        assert runner.timed_run() > 0
        assert time_runner(runner, warmup=1, runs=5).count == 5
    assert runner.session is None  # the context manager closed it
    dev = backend.device()
    assert dev["runtime"] == "onnxruntime" and dev["provider"] == "CPUExecutionProvider"
    assert dev["threads"] == 1 and dev["runtime_version"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity API on this OS")
def test_default_threads_follow_the_affinity_mask():
    """A run pinned to one core (taskset, a container cpuset) gets one thread per session by default,
    not the host's core count: two threads on one core time-slice and inflate every timing."""
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert get_backend("ort").device()["threads"] == 1
        assert get_backend("torch").threads == 1
    finally:
        os.sched_setaffinity(0, before)
    assert get_backend("ort").device()["threads"] == len(before)


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


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_ort_gpu_provider_without_onnxruntime_gpu_names_the_extra(provider):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(InputError) as e:
        get_backend("ort", provider=provider)
    assert ".[gpu]" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_missing_tensorrt_names_the_install():
    with pytest.raises(InputError, match="pip install tensorrt") as e:
        get_backend("tensorrt", precision="int8")
    assert "\n" not in str(e.value)


def test_torch_backend_runs_the_exported_module(resnet20_onnx):
    """OnnxSource -> the spec's module holding the ONNX's values: torch and ORT compute the same."""
    source = OnnxSource(resnet20_onnx)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with get_backend("torch", provider="cpu", threads=1).prepare(source, batch=2) as t, \
            get_backend("ort", threads=1).prepare(source, batch=2) as o:
        assert t.inputs["input"][0] == (2, 3, 32, 32) and t.timed_run() > 0
        (a,), (b,) = t.infer({"input": x}), o.infer({"input": x})
    assert a.shape == b.shape == (2, 10)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())


def test_plan_applied_module_equals_pruned_onnx(resnet20_onnx):
    """A table candidate (PlanSource): torch loads sync's module, ORT loads surgery's ONNX; same function."""
    model = load_model(resnet20_onnx)
    analysis = analyze(model)
    prunable = [g for g in analysis.groups if g.prunable]
    plan = Plan(channels={prunable[1].id: {"keep": list(range(8))}}, remove=["layer2.1"])
    source = PlanSource(OnnxSource(model), plan, analysis)
    module = source.torch_module()
    assert sum(p.numel() for p in module.parameters()) < sum(
        p.numel() for p in OnnxSource(model).torch_module().parameters())  # pruned, and the base untouched
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with get_backend("torch", provider="cpu").prepare(source, batch=4) as t, \
            get_backend("ort").prepare(source, batch=4) as o:
        (a,), (b,) = t.infer({"input": x}), o.infer({"input": x})
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())


def test_torch_backend_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(InputError, match="cpu or cuda"):
        get_backend("torch", provider="tensorrt")
    with pytest.raises(InputError, match="not int8"):
        get_backend("torch", provider="cpu", precision="int8")
    # an ONNX that `compress export` did not write names no torch model
    with pytest.raises(InputError, match="does not say which torch model"):
        get_backend("torch", provider="cpu").prepare(tiny_onnx(tmp_path / "t.onnx"))
    with get_backend("torch", provider="cpu").prepare(ModuleSource(torch.nn.Conv2d(3, 4, 1), (1, 3, 8, 8)), 2) as r:
        assert r.infer({"x": np.ones((2, 3, 8, 8), np.float32)})[0].shape == (2, 4, 8, 8)
    with pytest.raises(InputError, match="export it first"):
        get_backend("ort").prepare(ModuleSource(torch.nn.Conv2d(3, 4, 1), (1, 3, 8, 8)))


def test_torch_backend_builds_a_real_table(resnet20_onnx, tmp_path):
    """`profile --backend torch`: every group and block entry timed on the Plan-applied torch module."""
    from toolchain.latency.config import ProfileConfig
    from toolchain.latency.cpu import cpu_channel_block
    from toolchain.latency.lut import profile
    from toolchain.latency.store import Store

    config = ProfileConfig(backend="torch", provider="cpu", points=1, warmup=1, runs=3, target_se=None,
                           anchors=(), depth_anchors=())
    table = profile(str(resnet20_onnx), str(tmp_path / "t.sqlite"), config)
    analysis = analyze(load_model(resnet20_onnx))
    block = cpu_channel_block()  # widths on the CPU's channel grid: 16 with AVX-512, 8 with AVX2
    assert set(table.groups) == {g.id for g in analysis.groups if g.prunable and g.channels > block}
    assert len(table.blocks) >= 6 and table.base_ms > 0
    ratios = [r for v in table.groups.values() for r in v.values()] + list(table.blocks.values())
    assert all(np.isfinite(r) and r > 0 for r in ratios)  # values: this 2-core host is too loaded to bound them
    with Store(str(tmp_path / "t.sqlite")) as store:
        rows = store.items(model_sha256(load_model(resnet20_onnx)), "torch")
    assert len(rows) == len(ratios) and all(r["count"] == 3 and r["median_ms"] > 0 for r in rows)


# ---- GPU: only where a GPU (and TensorRT / onnxruntime-gpu) is present (pytest -m gpu) ----
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.mark.gpu
@cuda
def test_torch_backend_on_cuda_times_with_events(resnet20_onnx):
    source = OnnxSource(resnet20_onnx)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with get_backend("torch", provider="cuda").prepare(source, batch=2) as t, \
            get_backend("ort").prepare(source, batch=2) as o:
        assert t.cuda and t.timed_run() > 0
        (a,), (b,) = t.infer({"input": x}), o.infer({"input": x})
    assert np.abs(a - b).max() <= 1e-2 * max(1.0, np.abs(b).max())  # cuDNN may use TF32


@pytest.fixture
def trt_env():
    trt = pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return trt


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_per_precision_matches_ort(trt_env, resnet20_onnx, tmp_path, precision):
    cache = tmp_path / "timing.cache"
    backend = get_backend("tensorrt", precision=precision, timing_cache=cache)
    source = OnnxSource(resnet20_onnx)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with backend.prepare(source, batch=2) as runner, get_backend("ort").prepare(source, batch=2) as ref:
        stats = time_runner(runner, warmup=5, runs=20)
        (a,), (b,) = runner.infer({"input": x}), ref.infer({"input": x})
    assert stats.count == 20 and stats.median > 0
    assert cache.is_file() and cache.stat().st_size > 0  # persisted for the next build
    cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos > {"fp32": 0.9999, "fp16": 0.999, "int8": 0.9}[precision]
    dev = backend.device()
    assert dev["runtime"] == "tensorrt" and dev["runtime_version"] == trt_env.__version__
    assert dev["precision"] == precision
    if precision == "fp32":  # timed calls run the fixed (OPT) input, even right after infer on another batch
        with backend.load(backend.build(source, (1, 2, 4)), 2) as r:
            r.infer({"input": np.zeros((4, 3, 32, 32), np.float32)})
            assert r.timed_run() > 0 and tuple(r.poly.context.get_tensor_shape("input"))[0] == 2


@pytest.mark.gpu
def test_ort_cuda_provider_is_active_with_iobinding(resnet20_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers() or not torch.cuda.is_available():
        pytest.skip("needs onnxruntime-gpu and a GPU")
    with get_backend("ort", provider="cuda").prepare(resnet20_onnx, batch=2) as runner:
        assert runner.session.get_providers()[0] == "CUDAExecutionProvider"
        assert runner._binding is not None and runner.timed_run() > 0


def test_cli_profile_torch_and_provider_errors(resnet20_onnx, tmp_path):
    """`compress profile --backend torch` builds a table (exit 0); a GPU provider on the CPU onnxruntime
    is one line naming the extra (exit 2), and writes no store."""
    import json

    from typer.testing import CliRunner

    from toolchain.cli import app

    cli = CliRunner()
    store = tmp_path / "s.sqlite"
    res = cli.invoke(app, ["profile", str(resnet20_onnx), "--backend", "torch", "--provider", "cpu", "--runs", "2",
                           "--warmup", "0", "--points", "1", "--blocks-only", "--store", str(store), "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["blocks"]) >= 6
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        res = cli.invoke(app, ["profile", str(resnet20_onnx), "--provider", "cuda", "--store", str(tmp_path / "x")])
        assert res.exit_code == 2 and ".[gpu]" in res.output and not (tmp_path / "x").exists()


def test_every_backend_gets_the_tables_precision():
    """lut used to pass precision to ort only: TensorRT fp16/int8 tables timed FP32 engines."""
    from toolchain.latency.config import ProfileConfig

    for backend in ("ort", "tensorrt", "torch"):
        options = ProfileConfig(backend=backend, precision="int8", provider="cuda").backend_options()
        assert options["precision"] == "int8" and options["provider"] == "cuda"
    assert ProfileConfig(provider="cuda").protocol != ProfileConfig().protocol  # CUDA EP rows are not CPU rows


def test_ort_times_int8_as_a_qdq_model(resnet20_onnx):
    """`profile --backend ort --precision int8`: the loader runs the model quantized (QDQ), not as given."""
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with get_backend("ort", precision="int8").prepare(resnet20_onnx, 2) as q, \
            get_backend("ort").prepare(resnet20_onnx, 2) as f:
        (a,), (b,) = q.infer({"input": x}), f.infer({"input": x})
        assert q.timed_run() > 0
    assert 0 < np.abs(a - b).max() <= 0.5 * max(1.0, np.abs(b).max())  # quantized: close, not equal


def test_tensorrt_older_than_10_is_refused_in_one_line(monkeypatch):
    """JetPack 5's TensorRT 8.5 makes implicit-batch networks the ONNX parser rejects: refused up front.
    The stand-in module only reports a version (it runs nothing, so it can return no numbers)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    sys.modules["tensorrt"].__version__ = "8.5.2.2"
    with pytest.raises(InputError, match="TensorRT 8.5.2.2 is too old: compress needs TensorRT >= 10") as e:
        get_backend("tensorrt", precision="fp16")
    assert "\n" not in str(e.value)
