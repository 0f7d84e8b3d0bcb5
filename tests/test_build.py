"""toolchain.build: ORT fp32/fp16/int8 artifacts + manifests, accuracy check, --max-drop, bad input,
and TensorRT engines (gpu tests, skipped where TensorRT or a GPU is missing)."""
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import toolchain.build as tb
from graphs.errors import InputError
from toolchain.build import BuildCheckFailed, build

FAST = dict(latency_runs=5, val_count=200, calib_count=64)  # the default suite stays short


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _prune(onnx_path, out, ratio=0.3):
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from toolchain.prune import prune_to_dir, uniform_plan

    prune_to_dir(str(onnx_path), str(out), uniform_plan(analyze(load_model(str(onnx_path))), ratio, 8))
    return out


@pytest.fixture(scope="module")
def pruned_dir(resnet20_onnx, tmp_path_factory):
    return _prune(resnet20_onnx, tmp_path_factory.mktemp("build") / "pruned")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("calib-cache")


def _outputs(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_ort_builds(pruned_dir, cache_dir, tmp_path, precision):
    out = tmp_path / f"r20.{precision}.onnx"
    man = build(str(pruned_dir), "ort", precision, str(out), calib="mnist5k" if precision == "int8" else None,
                val="mnist5k", batch="1:4:8", cache_dir=str(cache_dir), **FAST)
    man_path = tmp_path / f"r20.{precision}.onnx.manifest.json"
    assert out.is_file() and man_path.is_file()
    assert json.loads(man_path.read_text()) == man
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, man_path.name])  # no temp left
    # fields and hashes
    assert man["artifact"]["sha256"] == _sha(out) and man["artifact"]["file"] == out.name
    assert man["source"]["onnx_sha256"] == _sha(pruned_dir / "model.onnx")
    assert man["source"]["spec"] == "builtin:resnet20"
    assert man["backend"]["name"] == "ort" and man["backend"]["version"] == ort.__version__
    assert man["device"]["device"] and man["precision"] == precision
    assert man["inputs"] == [{"name": "input", "shape": [-1, 3, 32, 32], "dtype": "float32"}]
    assert man["batch"] == {"min": 1, "opt": 4, "max": 8}
    lat = man["latency"]
    assert lat["batch"] == 4 and lat["median_ms"] > 0
    if precision != "fp32":
        assert lat["fp32_median_ms"] > 0 and lat["ratio_to_fp32"] > 0
    acc = man["accuracy"]
    assert acc["val"] == "mnist5k" and acc["samples"] == 200
    for k in ("top1_fp32", "top1", "top1_drop_points", "cosine_mean", "cosine_min", "top1_agreement"):
        assert k in acc
    assert acc["cosine_mean"] > (0.99 if precision == "int8" else 0.9999)
    # the artifact runs, in the batch profile, and computes what the FP32 model computes
    from calib.readers import load_calibration

    x = load_calibration("mnist5k", [1, 3, 32, 32], 8)  # in-distribution: INT8 ranges come from it
    ref, got = _outputs(pruned_dir / "model.onnx", x), _outputs(out, x)
    assert got.shape == ref.shape and got.dtype == np.float32
    tol = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.25}[precision]
    assert np.abs(got - ref).max() <= tol * max(1.0, np.abs(ref).max())
    if precision == "int8":
        c = man["calibration"]
        assert c["data"] == "mnist5k" and c["method"] == "minmax" and c["count"] == 64
        assert len(c["digest"]) == 64 and c["format"] == "QDQ"
        from calib.readers import digest_array, load_calibration

        assert c["digest"] == digest_array(load_calibration("mnist5k", [1, 3, 32, 32], 64))
    else:
        assert man["calibration"] is None


def test_calibration_cache_reused_on_second_build(pruned_dir, tmp_path, monkeypatch):
    import calib.qdq as qdq

    cache = tmp_path / "cache"
    first = build(str(pruned_dir), "ort", "int8", str(tmp_path / "a.onnx"), calib="mnist5k",
                  cache_dir=str(cache), measure=False, **FAST)
    assert first["calibration"]["calibrated"] and not first["calibration"]["cache_hit"]

    def no_calibration(*a, **k):
        raise AssertionError("calibration ran on the second build")

    monkeypatch.setattr(qdq, "_calibrate", no_calibration)
    second = build(str(pruned_dir), "ort", "int8", str(tmp_path / "b.onnx"), calib="mnist5k",
                   cache_dir=str(cache), measure=False, **FAST)
    assert second["calibration"]["cache_hit"] and not second["calibration"]["calibrated"]
    assert second["calibration"]["cache_file"] == first["calibration"]["cache_file"]
    assert second["artifact"]["sha256"] == first["artifact"]["sha256"]


def test_max_drop_failure_leaves_nothing(pruned_dir, tmp_path, monkeypatch):
    real = tb.accuracy_check

    def worse(*a, **k):  # the real check, then an artifact that lost 5 points
        r = real(*a, **k)
        return {**r, "top1": r["top1_fp32"] - 5.0, "top1_drop_points": 5.0}

    monkeypatch.setattr(tb, "accuracy_check", worse)
    out = tmp_path / "out" / "r20.int8.onnx"
    with pytest.raises(BuildCheckFailed, match="max-drop") as e:
        build(str(pruned_dir), "ort", "int8", str(out), calib="mnist5k", max_drop=1.0,
              cache_dir=str(tmp_path / "c"), measure=False, **FAST)
    assert e.value.manifest["passed"] is False and e.value.manifest["accuracy"]["top1_drop_points"] == 5.0
    assert list((tmp_path / "out").iterdir()) == []  # no artifact, no manifest, no temp files
    monkeypatch.setattr(tb, "accuracy_check", real)
    man = build(str(pruned_dir), "ort", "int8", str(out), calib="mnist5k", max_drop=100.0,
                cache_dir=str(tmp_path / "c"), measure=False, **FAST)
    assert man["passed"] and out.is_file()


def test_directory_output_and_plain_onnx_source(resnet20_onnx, tmp_path):
    man = build(str(resnet20_onnx), "ort", "fp32", str(tmp_path / "eng") + "/", measure=False)
    assert (tmp_path / "eng" / "model.onnx").is_file() and (tmp_path / "eng" / "manifest.json").is_file()
    assert man["accuracy"] is None and man["latency"] is None  # nothing asked for
    assert man["source"]["onnx_sha256"] == _sha(resnet20_onnx)


def test_bad_input(pruned_dir, tmp_path):
    out = tmp_path / "o.onnx"
    with pytest.raises(InputError, match="int8 needs --calib DATA"):
        build(str(pruned_dir), "ort", "int8", str(out))
    np.save(tmp_path / "wrong.npy", np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(InputError) as e:
        build(str(pruned_dir), "ort", "int8", str(out), calib=str(tmp_path / "wrong.npy"))
    assert "(4,1,28,28)" in str(e.value) and "(N,3,32,32)" in str(e.value)
    for kwargs in (dict(backend="onnx"), dict(precision="int4"), dict(batch="8:4:1"), dict(batch="x"),
                   dict(calib_method="kl", calib="mnist5k", precision="int8"), dict(max_drop=-1, val="mnist5k"),
                   dict(max_drop=1.0)):  # --max-drop without labelled data
        args = dict(source=str(pruned_dir), backend="ort", precision="fp32", out=str(out)) | kwargs
        with pytest.raises(InputError):
            build(**args)
    with pytest.raises(InputError, match="no such"):
        build(str(tmp_path / "nothing"), "ort", "fp32", str(out))
    assert not out.exists() and not (tmp_path / "o.onnx.manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.npy"]


def _has_tensorrt_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # noqa: F401
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - bindings without libnvinfer
        return False


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tensorrt_missing_is_the_error_for_valid_input(pruned_dir, tmp_path, precision):
    """A request that is valid in every other respect (the same one builds for ort): the one line names
    the TensorRT install, exit 2, nothing written."""
    args = dict(calib="mnist5k", calib_count=16) if precision == "int8" else {}
    ok = build(str(pruned_dir), "ort", precision, str(tmp_path / "ok" / "m.onnx"), measure=False, **args)
    assert ok["passed"]
    with pytest.raises(InputError) as e:
        build(str(pruned_dir), "tensorrt", precision, str(tmp_path / "trt" / "e.engine"), **args)
    msg = str(e.value)
    assert msg.startswith("TensorRT is not installed: pip install tensorrt") and "\n" not in msg
    assert not (tmp_path / "trt").exists()


def test_comparator_tells_a_different_model_apart(pruned_dir, resnet20_onnx):
    """Polygraphy's Comparator (build's output check) on two onnxruntime runners: same model passes,
    the pruned model against the unpruned one fails."""
    from toolchain.build_check import compare_outputs
    from toolchain.latency.backends import get_backend

    x = [np.random.default_rng(i).standard_normal((4, 3, 32, 32)).astype(np.float32) for i in range(2)]
    ort_be = get_backend("ort")
    with ort_be.prepare(resnet20_onnx, 4) as a, ort_be.prepare(resnet20_onnx, 4) as b, \
            ort_be.prepare(pruned_dir / "model.onnx", 4) as c:
        same = compare_outputs(a, b, x, "fp32")
        other = compare_outputs(a, c, x, "fp32")
    assert same["passed"] and same["batches"] == 2 and same["tool"] == "polygraphy Comparator"
    assert not other["passed"]


# ----------------------------------------------------------------------------------------- TensorRT
gpu = pytest.mark.skipif(not _has_tensorrt_gpu(), reason="needs TensorRT and an NVIDIA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_builds(pruned_dir, tmp_path, precision):
    import tensorrt as trt

    out = tmp_path / f"r20.{precision}.engine"
    man = build(str(pruned_dir), "tensorrt", precision, str(out), calib="mnist5k" if precision == "int8" else None,
                val="mnist5k", batch="1:4:8", cache_dir=str(tmp_path / "c"),
                timing_cache=str(tmp_path / "timing.cache"), **FAST)
    assert out.is_file() and man["artifact"]["sha256"] == _sha(out)
    assert man["backend"]["version"] == trt.__version__
    major = int(trt.__version__.split(".")[0])
    # QDQ INT8 is strongly typed on 10.x too; FP32/FP16 use the 10.x builder flags
    assert man["backend"]["mode"] == ("strongly typed" if major >= 11 or precision == "int8" else "builder flags")
    assert man["device"]["device"] and man["batch"] == {"min": 1, "opt": 4, "max": 8}
    assert man["latency"]["batch"] == 4 and man["latency"]["median_ms"] > 0
    if precision != "int8":  # INT8's Comparator verdict is recorded, not required (its tolerance is a guess)
        assert man["accuracy"]["comparator"]["passed"]
    assert (tmp_path / "timing.cache").is_file()  # written, reused by the next build
    assert man["accuracy"]["cosine_mean"] > (0.98 if precision == "int8" else 0.999)
    if precision != "fp32":
        assert man["latency"]["ratio_to_fp32"] > 0


@pytest.mark.gpu
@gpu
def test_tensorrt10_calibrator_path(pruned_dir, tmp_path):
    import tensorrt as trt

    if int(trt.__version__.split(".")[0]) >= 11:
        with pytest.raises(InputError, match="no calibrators"):
            build(str(pruned_dir), "tensorrt", "int8", str(tmp_path / "e.engine"), calib="mnist5k",
                  int8_mode="calibrator")
        return
    man = build(str(pruned_dir), "tensorrt", "int8", str(tmp_path / "e.engine"), calib="mnist5k",
                int8_mode="calibrator", cache_dir=str(tmp_path / "c"), **FAST)
    assert man["calibration"]["format"] == "tensorrt-calibrator"
    assert Path(man["calibration"]["cache_file"]).is_file()


@pytest.mark.gpu
@gpu
def test_tensorrt_build_failure_leaves_nothing(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # valid input for build (one 4-D float input), with an op TensorRT's parser has no importer for:
    # the failure must come from TensorRT, in one line, and leave nothing behind
    node = helper.make_node("NoSuchOp", ["input"], ["output"], domain="com.example")
    g = helper.make_graph([node], "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 10
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="TensorRT engine build failed") as e:
        build(str(path), "tensorrt", "fp32", str(out / "e.engine"))
    assert "\n" not in str(e.value)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_ort_builds_pruned_torchvision_resnet18(tmp_path):
    from toolchain.export import export_spec

    onnx_path = tmp_path / "r18.onnx"
    export_spec("torchvision:resnet18", str(onnx_path))
    pruned = _prune(onnx_path, tmp_path / "p18")
    for precision in ("fp32", "fp16", "int8"):
        out = tmp_path / f"r18.{precision}.onnx"
        man = build(str(pruned), "ort", precision, str(out), calib="mnist5k" if precision == "int8" else None,
                    val="mnist5k", cache_dir=str(tmp_path / "c"), latency_runs=10, val_count=100, calib_count=64)
        assert man["artifact"]["sha256"] == _sha(out)
        assert man["inputs"][0]["shape"] == [-1, 3, 224, 224]
        assert man["accuracy"]["cosine_mean"] > (0.95 if precision == "int8" else 0.999)


@pytest.mark.slow
def test_int8_top1_drop_on_trained_resnet20(resnet20_onnx, tmp_path):
    """Pruned resnet20 fine-tuned on mnist5k: INT8 (QDQ, minmax) top-1 within 1 point of FP32."""
    from toolchain.finetune import finetune_dir
    from toolchain.train import TrainConfig

    pruned = _prune(resnet20_onnx, tmp_path / "p20")
    finetune_dir(pruned, "mnist5k", TrainConfig(epochs=2, lr=0.01))
    man = build(str(pruned), "ort", "int8", str(tmp_path / "r20.int8.onnx"), calib="mnist5k",
                cache_dir=str(tmp_path / "c"), max_drop=1.0, latency_runs=30)
    acc = man["accuracy"]
    print(f"\nINT8 top-1 {acc['top1']:.2f}% vs FP32 {acc['top1_fp32']:.2f}% "
          f"(drop {acc['top1_drop_points']:.2f} points); latency ratio {man['latency']['ratio_to_fp32']:.3f}")
    assert acc["top1_fp32"] > 80 and acc["top1_drop_points"] <= 1.0
