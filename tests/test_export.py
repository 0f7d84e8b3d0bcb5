"""torch -> ONNX export (toolchain.export): BN kept, torch names AND values, dynamic batch, parity."""

import io
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from safetensors.torch import save_file
from torch import nn

from graphs.errors import InputError
from toolchain.export import export_onnx, export_spec, undo_initializer_dedup
from toolchain.zoo import build_model, default_input_shape

# Random-init models: every BN has weight 1, bias 0, mean 0, var 1, so the exporter de-duplicates.
SPECS = ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "builtin:resnet20",
         "builtin:vgg19_bn", "timm:resnet10t"]


def _inits(proto):
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def _run(proto, x):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    return sess.run(None, {"input": x.numpy()})


def _close(got, ref):
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    return got.shape == ref.shape and float(np.abs(got - ref).max()) <= tol


def _check_values(model, proto):
    inits = _inits(proto)
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        assert k in inits, f"no initializer named {k}"
        assert inits[k].dtype == v.numpy().dtype and np.array_equal(inits[k], v.numpy()), k


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out, d = {}, tmp_path_factory.mktemp("onnx")
    for spec in SPECS:
        torch.manual_seed(0)
        model = build_model(spec)
        path = d / (spec.replace(":", "_") + ".onnx")
        proto = export_onnx(model, default_input_shape(spec), path, spec=spec)
        out[spec] = (model, proto, path)
    return out


@pytest.mark.parametrize("spec", SPECS)
def test_export_keeps_bn_names_and_values(exported, spec):
    model, proto, path = exported[spec]
    onnx.checker.check_model(proto)
    assert onnx.load(str(path)) == proto  # what is written is what is returned
    assert proto.ir_version <= 10
    ops = [n.op_type for n in proto.graph.node]
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert n_bn > 0 and ops.count("BatchNormalization") == n_bn
    _check_values(model, proto)
    inits = {t.name for t in proto.graph.initializer}
    assert not [n.name for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    # Node names carry the module scope the graph analysis parses.
    assert all(n.name.startswith("/") for n in proto.graph.node if n.op_type == "Conv")
    meta = {p.key: p.value for p in proto.metadata_props}
    shape = ",".join(map(str, default_input_shape(spec)))
    assert meta == {"compress.spec": spec, "compress.input_shape": shape}
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]


@pytest.mark.parametrize("spec", SPECS)
def test_onnxruntime_matches_torch_dynamic_batch(exported, spec):
    model, proto, _ = exported[spec]
    for batch in (1, 3):
        x = torch.randn(batch, *default_input_shape(spec)[1:])
        with torch.no_grad():
            ref = model(x).numpy()
        (got,) = _run(proto, x)
        assert _close(got, ref), (batch, float(np.abs(got - ref).max()), float(np.abs(ref).max()))


def test_dedup_happens_and_is_undone():
    # The raw legacy export of a random-init model shares equal BN tensors behind Identity nodes.
    model = build_model("builtin:resnet20")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), buf, dynamo=False,
                          do_constant_folding=False, opset_version=17)
    raw = onnx.load_from_string(buf.getvalue())
    n_ident = sum(n.op_type == "Identity" for n in raw.graph.node)
    assert n_ident > 50
    assert undo_initializer_dedup(raw) == n_ident
    assert not any(n.op_type == "Identity" for n in raw.graph.node)
    _check_values(model, raw)
    onnx.checker.check_model(raw)


def _perturbed(spec):
    # BN stats and affine params away from their defaults but well scaled (var > 0).
    torch.manual_seed(1)
    sd = build_model(spec).state_dict()
    new = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            new[k] = v
        elif k.endswith("running_var"):
            new[k] = torch.rand_like(v) + 0.5
        elif k.endswith(("running_mean", "bn1.bias", "bn2.bias")):
            new[k] = 0.1 * torch.randn_like(v)
        elif k.endswith(("bn1.weight", "bn2.weight")):
            new[k] = torch.rand_like(v) + 0.5
        else:
            new[k] = v + 0.01 * torch.randn_like(v)
    return new


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_checkpoint_round_trip_changes_exported_values(tmp_path, fmt):
    spec = "builtin:resnet20"
    sd = _perturbed(spec)
    ckpt = tmp_path / f"w.{fmt}"
    save_file(sd, str(ckpt)) if fmt == "safetensors" else torch.save({"state_dict": sd}, ckpt)
    proto = export_spec(spec, tmp_path / "m.onnx", checkpoint=str(ckpt))
    default = _inits(export_spec(spec, None))
    inits = _inits(proto)
    changed = [k for k in sd if not k.endswith("num_batches_tracked")
               and not np.array_equal(inits[k], default[k])]
    assert len(changed) == sum(not k.endswith("num_batches_tracked") for k in sd)
    model = build_model(spec, checkpoint=str(ckpt))
    _check_values(model, proto)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    assert _close(_run(proto, x)[0], ref)
    assert onnx.load(str(tmp_path / "m.onnx")) == proto


def test_export_spec_defaults_and_atomic_write(tmp_path):
    path = tmp_path / "sub" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(b"old")
    proto = export_spec("builtin:resnet20", path, input_shape=(2, 3, 40, 40))
    assert onnx.load(str(path)) == proto
    assert os.listdir(path.parent) == ["m.onnx"]  # no temp file left behind
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["compress.input_shape"] == "2,3,40,40"


def test_multiple_outputs(tmp_path):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn(self.conv(x))
            return y, y.mean((2, 3))

    model = Two().eval()
    proto = export_onnx(model, (1, 3, 8, 8), tmp_path / "two.onnx")
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    assert all(_close(g, r) for g, r in zip(_run(proto, x), ref))


class _Unsupported(nn.Module):
    def forward(self, x):
        return torch.fft.fft2(x).real


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.mean() > 0:  # the tracer bakes in whichever branch the example input took
            return self.conv(x)
        return -self.conv(x)


def test_export_failures_are_input_errors(tmp_path, capfd):
    cases = [(_Unsupported(), (1, 3, 8, 8), ["_Unsupported", "aten::fft_fft2"]),
             (_Branchy(), (1, 3, 8, 8), ["_Branchy", "data-dependent"]),
             (build_model("builtin:resnet20"), (1, 5, 32, 32), ["does not run", "(1, 5, 32, 32)"]),
             (build_model("builtin:resnet20"), (1, 3, 0, 32), ["input shape"]),
             (build_model("builtin:resnet20"), ("1", "x"), ["input shape"])]
    for model, shape, words in cases:
        with pytest.raises(InputError) as e:
            export_onnx(model, shape, tmp_path / "bad.onnx")
        msg = str(e.value)
        assert "\n" not in msg and all(w in msg for w in words), msg
    assert not (tmp_path / "bad.onnx").exists()
    assert "Torch IR graph" not in capfd.readouterr().out  # the exporter's graph dump is silenced


def test_multihead_attention_exports_and_fastpath_is_restored(tmp_path):
    """MHA's eval fast path is one fused op the legacy exporter cannot write: export turns it off
    (torch.backends.mha, public) and puts the user's setting back."""
    import numpy as np
    import onnxruntime as ort

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            t = self.conv(x).flatten(2).transpose(1, 2)
            return self.attn(t, t, t, need_weights=False)[0].mean(1)

    model = Attn().eval()
    assert torch.backends.mha.get_fastpath_enabled()
    export_onnx(model, (1, 3, 8, 8), tmp_path / "attn.onnx")
    assert torch.backends.mha.get_fastpath_enabled()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(tmp_path / "attn.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-5)
