"""Model specs, built-in CIFAR models and checkpoint loading (toolchain.zoo, toolchain.cifar_models)."""

import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from graphs.errors import InputError
from toolchain import cifar_models
from toolchain.zoo import build_model, default_input_shape, list_builtin, load_checkpoint


class Payload:
    """Any class instance in a pickle: weights_only loading must refuse it."""


# ---- built-in CIFAR models -------------------------------------------------------------------

@pytest.mark.parametrize("name, blocks, params", [("resnet20", 3, 272_474), ("resnet56", 9, 855_770)])
def test_cifar_resnet_structure(name, blocks, params):
    m = getattr(cifar_models, name)()
    assert [len(s) for s in (m.layer1, m.layer2, m.layer3)] == [blocks] * 3
    assert sum(p.numel() for p in m.parameters()) == params
    # Option B: projection only where the shape changes; identity blocks have an empty shortcut.
    projected = [n for n, b in m.named_modules() if isinstance(b, cifar_models.BasicBlock) and len(b.shortcut)]
    assert projected == ["layer2.0", "layer3.0"]
    for attr in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
        assert hasattr(m.layer1[0], attr)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_vgg_structure():
    m = cifar_models.vgg19_bn(num_classes=100, in_channels=1)
    convs = [x for x in m.features if isinstance(x, nn.Conv2d)]
    assert len(convs) == 16 and convs[0].in_channels == 1
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.features) == 5
    assert not any(getattr(x, "inplace", False) for x in m.modules())
    assert m.classifier.in_features == 512 and m.classifier.out_features == 100
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 100)


# ---- specs -----------------------------------------------------------------------------------

def test_specs_build_in_eval_mode():
    assert list_builtin() == ["resnet20", "resnet56", "vgg19_bn"]
    for spec, cls in [("builtin:resnet20", "CifarResNet"), ("torchvision:resnet18", "ResNet"),
                      ("timm:resnet10t", "ResNet")]:
        m = build_model(spec, num_classes=7)
        assert type(m).__name__ == cls and not m.training
        assert m(torch.randn(1, *default_input_shape(spec)[1:])).shape == (1, 7)
    assert default_input_shape("builtin:vgg19_bn") == (1, 3, 32, 32)
    assert default_input_shape("torchvision:resnet18") == (1, 3, 224, 224)
    assert default_input_shape("timm:resnet10t") == (1, 3, 224, 224)


@pytest.mark.parametrize("spec, words", [
    ("resnet18", ["PREFIX:NAME"]),
    ("tf:resnet18", ["unknown model spec prefix", "'tf'"]),
    ("builtin:resnet21", ["unknown builtin model", "resnet20"]),
    ("torchvision:resnet19", ["unknown torchvision model", "resnet18"]),
    ("timm:resnet10x", ["unknown timm model", "resnet10t"]),
    ("builtin:", ["no model name"]),
    ("nowhere/model.py:make", ["model file not found", "nowhere/model.py"]),
])
def test_bad_specs(spec, words):
    with pytest.raises(InputError) as e:
        build_model(spec)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_path_spec(tmp_path):
    f = tmp_path / "mynet.py"
    f.write_text(textwrap.dedent("""
        import torch
        INPUT_SHAPE = (1, 3, 16, 16)
        def make(num_classes=4):
            return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                       torch.nn.Linear(8, num_classes))
        def not_a_model():
            return 42
        def broken():
            raise RuntimeError("boom")
    """))
    m = build_model(f"{f}:make")
    assert isinstance(m, nn.Module) and not m.training
    assert default_input_shape(f"{f}:make") == (1, 3, 16, 16)
    assert build_model(f"{f}:make", num_classes=2)[-1].out_features == 2
    for factory, words in [("missing", "not found"), ("not_a_model", "not a torch.nn.Module"),
                           ("broken", "boom")]:
        with pytest.raises(InputError, match=words):
            build_model(f"{f}:{factory}")
    g = tmp_path / "bad.py"
    g.write_text("import no_such_module_xyz\n")
    with pytest.raises(InputError, match="no_such_module_xyz"):
        build_model(f"{g}:make")


# ---- checkpoints -----------------------------------------------------------------------------

def _perturbed_state(spec="builtin:resnet20"):
    torch.manual_seed(0)
    sd = build_model(spec).state_dict()
    return {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in sd.items()}


@pytest.mark.parametrize("form", ["safetensors", "pt", "pt_state_dict", "pt_model_ddp"])
def test_checkpoint_forms(tmp_path, form):
    sd = _perturbed_state()
    if form == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(sd, str(path))
    else:
        obj = {"pt": sd, "pt_state_dict": {"state_dict": sd, "epoch": 3},
               "pt_model_ddp": {"model": {f"module.{k}": v for k, v in sd.items()}}}[form]
        path = tmp_path / "w.pt"
        torch.save(obj, path)
    m = build_model("builtin:resnet20", checkpoint=str(path))
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_checkpoint_errors(tmp_path):
    sd = _perturbed_state()
    with pytest.raises(InputError, match="checkpoint not found"):
        build_model("builtin:resnet20", checkpoint=str(tmp_path / "nope.pt"))

    evil = tmp_path / "evil.pt"
    torch.save({"conv1.weight": sd["conv1.weight"], "extra": Payload()}, evil)
    with pytest.raises(InputError, match="not a weights-only.*Payload") as e:
        build_model("builtin:resnet20", checkpoint=str(evil))
    assert "\n" not in str(e.value)

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="unreadable"):
        build_model("builtin:resnet20", checkpoint=str(junk))
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="unreadable"):
        build_model("builtin:resnet20", checkpoint=str(junk_st))

    notdict = tmp_path / "list.pt"
    torch.save([1, 2, 3], notdict)
    with pytest.raises(InputError, match="state dict"):
        build_model("builtin:resnet20", checkpoint=str(notdict))


def test_checkpoint_not_fitting(tmp_path):
    sd = _perturbed_state()
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "fc.bias"}, ["missing keys", "fc.bias"]),
        "unexpected": ({**sd, "fc2.weight": torch.zeros(1)}, ["unexpected keys", "fc2.weight"]),
        "shape": ({**sd, "fc.weight": torch.zeros(5, 64)}, ["shape mismatches", "fc.weight (5, 64)"]),
    }
    for name, (state, words) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(state, str(path))
        with pytest.raises(InputError) as e:
            build_model("builtin:resnet20", checkpoint=str(path))
        assert all(w in str(e.value) for w in words), str(e.value)
    # A checkpoint without num_batches_tracked (older torch) still loads.
    path = tmp_path / "nbt.pt"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    load_checkpoint(build_model("builtin:resnet20"), str(path))
    # Other model: many mismatches are summarised, not listed.
    save_file(_perturbed_state("builtin:vgg19_bn"), str(tmp_path / "vgg.safetensors"))
    with pytest.raises(InputError, match=r"more\)") as e:
        build_model("builtin:resnet20", checkpoint=str(tmp_path / "vgg.safetensors"))
    assert "\n" not in str(e.value)
