"""calib/: calibration readers and digests, QDQ quantization and its cache, the TensorRT calibrator."""
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calib import qdq
from calib.readers import ArrayReader, digest_array, load_calibration
from graphs.errors import InputError

SHAPE = [1, 3, 32, 32]


@pytest.fixture(scope="module")
def pruned_dir(resnet20_onnx, tmp_path_factory):
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from toolchain.prune import prune_to_dir, uniform_plan

    out = tmp_path_factory.mktemp("calib") / "pruned"
    prune_to_dir(str(resnet20_onnx), str(out), uniform_plan(analyze(load_model(str(resnet20_onnx))), 0.3, 8))
    return out


def test_data_spec_is_deterministic_and_shaped():
    a = load_calibration("mnist5k", SHAPE, 40)
    b = load_calibration("mnist5k", SHAPE, 40)
    assert a.shape == (40, 3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert digest_array(b) == digest_array(a)
    assert digest_array(load_calibration("mnist5k", SHAPE, 41)) != digest_array(a)  # of the exact tensors


def test_npy_npz_and_folder(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    got = load_calibration(str(tmp_path / "a.npy"), SHAPE, 8)
    assert np.array_equal(got, x[:8])  # ready inputs are fed as they are
    np.savez(tmp_path / "b.npz", x=x[:4])
    assert np.array_equal(load_calibration(str(tmp_path / "b.npz"), SHAPE), x[:4])
    folder = tmp_path / "dir"
    folder.mkdir()
    np.save(folder / "0.npy", x[:3])
    np.save(folder / "1.npy", x[3])  # a single (C,H,W) sample
    assert np.array_equal(load_calibration(str(folder), SHAPE), x[:4])


def test_wrong_shape_names_both_shapes(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(InputError) as e:
        load_calibration(str(tmp_path / "bad.npy"), SHAPE)
    msg = str(e.value)
    assert "(4,1,28,28)" in msg and "(N,3,32,32)" in msg and "\n" not in msg


def test_bad_calib_sources(tmp_path):
    for bad in ["", "nosuchdata", str(tmp_path / "missing.npy")]:
        with pytest.raises(InputError):
            load_calibration(bad, SHAPE)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError):
        load_calibration(str(tmp_path / "x.txt"), SHAPE)


def test_reader_is_an_ort_calibration_reader():
    from onnxruntime.quantization import CalibrationDataReader

    reader = ArrayReader(load_calibration("mnist5k", SHAPE, 20), "input", batch_size=8)  # as quantize_qdq makes it
    assert isinstance(reader, CalibrationDataReader)
    sizes = [b["input"].shape[0] for b in iter(reader.get_next, None)]
    assert sizes == [8, 8, 4]
    reader.rewind()
    assert reader.get_next()["input"].shape == (8, 3, 32, 32)


def test_qdq_symmetric_per_channel_and_cache_reuse(pruned_dir, tmp_path, monkeypatch):
    x = load_calibration("mnist5k", SHAPE, 32)
    d = digest_array(x)
    cache = tmp_path / "cache"
    info = qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / "q.onnx", x, d, cache_dir=cache)
    assert info["calibrated"] and not info["cache_hit"] and info["batches_read"] > 0
    assert (cache / f"{qdq.cache_key(_sha(pruned_dir / 'model.onnx'), d, 'minmax')}.json").is_file()

    m = onnx.load(str(tmp_path / "q.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    zps = [inits[n.input[2]] for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
           and len(n.input) > 2 and n.input[2] in inits]
    assert zps and all((z == 0).all() for z in zps)                       # symmetric: zero-point 0
    assert {z.dtype for z in zps} <= {np.dtype(np.int8), np.dtype(np.int32)}  # int8 (int32 biases)
    conv_w = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits
              and inits[n.input[1]].size > 1 and inits[n.input[0]].dtype == np.int8]
    assert conv_w, "weights are quantized per channel"

    def no_calibration(*a, **k):
        raise AssertionError("calibration ran although the cache holds the ranges")

    monkeypatch.setattr(qdq, "_calibrate", no_calibration)
    again = qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / "q2.onnx", x, d, cache_dir=cache)
    assert again["cache_hit"] and not again["calibrated"] and again["batches_read"] == 0
    assert (tmp_path / "q2.onnx").read_bytes() == (tmp_path / "q.onnx").read_bytes()


def _int32_bias_dequantize(path) -> list:
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].dtype == np.int32]


def test_qdq_for_tensorrt_keeps_biases_float(pruned_dir, tmp_path):
    """TensorRT's ONNX parser rejects INT32 DequantizeLinear (quantized biases): the TensorRT flavour has none,
    its convolutions take float biases, and it still computes what the FP32 model does."""
    import onnxruntime as ort

    x = load_calibration("mnist5k", SHAPE, 32)
    d = digest_array(x)
    qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / "ort.onnx", x, d, cache_dir=tmp_path / "c")
    info = qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / "trt.onnx", x, d, cache_dir=tmp_path / "c",
                            for_tensorrt=True)
    assert _int32_bias_dequantize(tmp_path / "ort.onnx")  # the check sees quantized biases where they are
    assert not _int32_bias_dequantize(tmp_path / "trt.onnx") and info["bias"] == "float (TensorRT)"
    m = onnx.load(str(tmp_path / "trt.onnx"))
    floats = {i.name for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert convs and all(n.input[2] in floats for n in convs)
    assert any(n.op_type == "DequantizeLinear" for n in m.graph.node)  # weights and activations still INT8
    outs = []
    for name in ("trt.onnx", "ort.onnx"):
        s = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: x[:8]})[0])
    assert np.abs(outs[0] - outs[1]).max() <= 0.25 * max(1.0, np.abs(outs[1]).max())


def test_qdq_for_timing_is_trt_flavoured_int8():
    """Latency tables at int8: a QDQ model from seeded inputs, without INT32 biases for TensorRT."""
    from toolchain.latency.backends.source import onnx_traits

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.ones(8, np.float32), "b")
    g = onnx.helper.make_graph([onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "c",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8, 8, 8])],
                               [w, b])
    model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 10
    q = qdq.quantize_for_timing(model.SerializeToString(), for_tensorrt=True)
    assert onnx_traits(q) == (False, True)
    assert not _int32_bias_dequantize_bytes(q)
    assert qdq.quantize_for_timing(model.SerializeToString(), for_tensorrt=True) == q  # seeded: same model


def _int32_bias_dequantize_bytes(data: bytes) -> list:
    m = onnx.load_from_string(data)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].dtype == np.int32]


def test_qdq_methods_differ(pruned_dir, tmp_path):
    x = load_calibration("mnist5k", SHAPE, 32)
    d = digest_array(x)
    out = {}
    for method in ("minmax", "percentile"):
        qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / f"{method}.onnx", x, d, method=method,
                         cache_dir=tmp_path / "c")
        out[method] = (tmp_path / f"{method}.onnx").read_bytes()
    assert out["minmax"] != out["percentile"]
    with pytest.raises(InputError):
        qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / "z.onnx", x, d, method="kl")


def test_array_reader_alone():
    r = ArrayReader(np.zeros((5, 3, 4, 4), np.float32), "x", batch_size=2)
    assert len(r) == 3 and [b["x"].shape[0] for b in r] == [2, 2, 1]


def test_calibration_batches_are_full_and_reiterable():
    from calib.tensorrt_calib import CalibrationBatches

    b = CalibrationBatches(np.arange(10 * 3 * 2 * 2, dtype=np.float32).reshape(10, 3, 2, 2), "input", 4)
    first = [f["input"].shape[0] for f in b]
    assert first == [4, 4] and len(b) == 2  # TensorRT calibrates at a fixed (OPT) shape: no short batch
    assert [f["input"].shape[0] for f in b] == first  # Polygraphy's reset() iterates again


def test_tensorrt_calibrator_without_tensorrt(tmp_path):
    import calib.tensorrt_calib as tc  # importing never needs TensorRT

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: covered by the gpu tests")
    with pytest.raises(InputError, match="pip install tensorrt"):
        tc.make_entropy_calibrator(np.zeros((4, 3, 32, 32), np.float32), tmp_path / "c.cache")


@pytest.mark.gpu
def test_tensorrt_entropy_calibrator_batches(tmp_path):
    trt = pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    import calib.tensorrt_calib as tc

    if not tc.supports_calibrator(trt):
        pytest.skip(f"TensorRT {trt.__version__} has no calibrators")
    cal = tc.make_entropy_calibrator(np.ones((10, 3, 32, 32), np.float32), tmp_path / "c.cache", batch_size=4)
    assert isinstance(cal, trt.IInt8EntropyCalibrator2)
    assert cal.get_batch(["input"]) and cal.get_batch(["input"]) and cal.get_batch(["input"]) is None
    assert cal.num_batches == 2
    cal.write_calibration_cache(np.frombuffer(b"table", np.uint8))
    assert (tmp_path / "c.cache").read_bytes() == b"table"


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_int8_saturation_is_read_from_the_cpu_flags(monkeypatch):
    """x86 without VNNI saturates 8-bit dot products (7-bit weights then); VNNI or another ISA does not."""
    from toolchain.latency import cpu

    for machine, flags, saturates in [("x86_64", "fpu sse avx2 fma", True), ("x86_64", "avx2 avx512f avx512_vnni", False),
                                      ("x86_64", "avx2 avx_vnni", False), ("aarch64", "fp asimd asimddp", False)]:
        monkeypatch.setattr(cpu, "_cpuinfo", lambda field, flags=flags: flags if field == "flags" else "")
        monkeypatch.setattr(cpu.platform, "machine", lambda machine=machine: machine)
        assert cpu.int8_dot_saturates() is saturates, (machine, flags)


def test_reduce_range_quantizes_weights_to_7_bits(pruned_dir, tmp_path):
    """For CPUs whose int8 dot products saturate: weights within +-64 instead of +-127, and it is said."""
    x = load_calibration("mnist5k", SHAPE, 16)

    def weight_peak(path):
        m = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return max(int(np.abs(inits[n.input[0]].astype(np.int32)).max()) for n in m.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8)

    full = qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / "full.onnx", x, digest_array(x), cache_dir=tmp_path / "c")
    seven = qdq.quantize_qdq(pruned_dir / "model.onnx", tmp_path / "seven.onnx", x, digest_array(x),
                             cache_dir=tmp_path / "c", reduce_range=True)
    assert weight_peak(tmp_path / "full.onnx") == 127 and weight_peak(tmp_path / "seven.onnx") <= 64
    assert "7-bit" in seven["weights"] and "7-bit" not in full["weights"]
