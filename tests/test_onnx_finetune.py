"""Fine-tuning a model pruned from an ONNX file with no torch source (plain torch.onnx.export, BatchNorm
folded): onnx2torch's module, trained, its values written back into model.onnx by initializer name."""
import json
import shutil
import sys

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file, save_file

from graphs.onnx_io import initializer_arrays, load_model
from graphs.parity import parity, run_onnx
from tests.test_cli import assert_bad_input, invoke
from tests.test_distill_only import write_pngs
from toolchain.cifar_models import resnet20
from toolchain.data import make_loader

pytest.importorskip("onnx2torch", reason="the optional extra .[onnx2torch] is not installed")


@pytest.fixture(scope="module", params=["legacy", "dynamo"])
def pruned_plain(request, tmp_path_factory):
    """resnet20 exported as users do (eval, default options: BN folded), pruned without a torch source."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(f"plain_{request.param}")
    path = folder / "resnet20.onnx"
    torch.onnx.export(resnet20().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=request.param == "dynamo",
                      **({"external_data": False} if request.param == "dynamo" else {}))
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)
    out = folder / "pruned"
    result = invoke("prune", path, "--ratio", "0.3", "--round-to", "8", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["onnx_only"]
    return out



def ort_vs_module(model, module, x):
    with torch.no_grad():
        return parity([module.eval()(x).numpy()], run_onnx(model, {model.graph.input[0].name: x.numpy()}))


def test_converted_module_equals_the_onnx_before_and_after_training(pruned_plain, one_thread):
    """Parity under onnxruntime twice: onnx2torch's module vs the pruned ONNX, then, after SGD steps on
    real digits, the ONNX with the trained values written back vs the trained module."""
    from toolchain.onnx_torch import module_from_onnx, onnx_with_values

    model = load_model(pruned_plain / "model.onnx")
    converted = module_from_onnx(model)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert ort_vs_module(model, converted.module, x).ok
    params = dict(converted.module.named_parameters())
    assert len(params) == len(converted.sources) - 0 and all(k in converted.sources for k in params)

    optimizer = torch.optim.SGD(converted.module.parameters(), lr=0.05, momentum=0.9)
    for (images, labels), _ in zip(make_loader("digits", (1, 3, 32, 32), "train", 32, seed=0), range(5)):
        converted.module.train()
        loss = torch.nn.functional.cross_entropy(converted.module(images), labels)  # batch 32: batch-free reshapes
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = onnx_with_values(model, converted)
    assert ort_vs_module(trained, converted.module, x).ok  # the written-back ONNX is the trained module
    assert not ort_vs_module(model, converted.module, x).ok  # and training changed what it computes
    names = {i.name for i in model.graph.initializer}
    assert {i.name for i in trained.graph.initializer} == names  # same graph, same initializer names


def test_finetune_cli_writes_trained_weights_into_model_onnx(pruned_plain, tmp_path, one_thread):
    """Labels (digits): the val loss the command reports after training is the loss of the new model.onnx
    under onnxruntime, lower than before; weights.safetensors holds model.onnx's initializers by name."""
    work = tmp_path / "work"
    shutil.copytree(pruned_plain, work)
    old = initializer_arrays(load_model(work / "model.onnx"))
    result = invoke("finetune", work, "--data", "digits", "--epochs", "1", "--lr", "0.05", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["after"]["loss"] < report["before"]["loss"], report
    model = load_model(work / "model.onnx")
    new = initializer_arrays(model)
    assert new.keys() == old.keys() and any(not np.array_equal(new[k], old[k]) for k in new)
    weights = load_file(str(work / "weights.safetensors"))
    assert weights.keys() == {k for k, v in new.items() if v.dtype == np.float32}
    assert all(np.array_equal(weights[k].numpy(), new[k]) for k in weights)
    loss, count = 0.0, 0
    for images, labels in make_loader("digits", (1, 3, 32, 32), "val", 256, seed=0):
        for image, label in zip(images, labels):  # the exported graph has batch 1
            logits = run_onnx(model, {model.graph.input[0].name: image[None].numpy()})[0]
            loss += float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), label[None]))
            count += 1
    assert loss / count == pytest.approx(report["after"]["loss"], rel=1e-4)

    # verify: the masked source no longer applies; the weights file must be model.onnx's values
    assert invoke("verify", work).exit_code == 0
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    save_file(weights, str(work / "weights.safetensors"))
    assert invoke("verify", work).exit_code == 1


def test_distill_only_without_torch_source(pruned_plain, tmp_path, one_thread):
    """Unlabeled Fashion-MNIST PNGs; the teacher is onnx2torch's module of the unpruned source ONNX."""
    images = write_pngs(tmp_path / "images", 96)
    work = tmp_path / "work"
    shutil.copytree(pruned_plain, work)
    result = invoke("finetune", work, "--data", f"imagefolder:{images}", "--distill-only", "--epochs", "2",
                    "--lr", "0.02", "--batch-size", "16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["after"]["distance"] < 0.7 * report["before"]["distance"], report


def test_missing_converter_is_bad_input(pruned_plain, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "onnx2torch" or m.startswith("onnx2torch.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    work = tmp_path / "work"
    shutil.copytree(pruned_plain, work)
    assert_bad_input(invoke("finetune", work, "--data", "digits", "--epochs", "1"), "pip install -e .[onnx2torch]")
    assert not (work / "train.json").exists() and not (work / "finetune").exists()
