"""`compress finetune DIR --data imagefolder:PATH --distill-only`: no labels, output distillation from the
unpruned model on real images (Fashion-MNIST test images written as PNG files straight into a folder)."""
import filecmp
import json
import shutil

import numpy as np
import pytest
import torch

from graphs.errors import InputError
from graphs.onnx_io import load_model
from tests.test_cli import assert_bad_input, invoke
from toolchain.data import load_dataset
from toolchain.data_sources import source
from toolchain.pruned_dir import load_pruned_module
from toolchain.torch_source import torch_module_for
from toolchain.train import TrainConfig


def write_pngs(folder, count, offset=0):
    """`count` real Fashion-MNIST test images as PNG files directly in `folder` (no class folders)."""
    from PIL import Image

    try:
        images = source("fashion-mnist").images
    except InputError as exc:
        pytest.skip(str(exc))
    folder.mkdir(parents=True, exist_ok=True)
    test_start = 60_000  # the published test images follow the 60,000 training images
    for i in range(count):
        Image.fromarray(images[test_start + offset + i, 0]).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_pngs(tmp_path_factory.mktemp("unlabeled") / "images", 160)


def calibrated_export(spec, shape, images, path):
    """`compress export SPEC --checkpoint` of the random-weight model with BatchNorm statistics set from
    the real images: a teacher whose eval-mode outputs are well scaled, as a trained model's are (the
    statistics of a random init, 0 and 1, make outputs of 1e-9 or 1e3 that nothing can be learned from)."""
    from safetensors.torch import save_file
    from toolchain.data import make_loader
    from toolchain.zoo import build_model

    torch.manual_seed(0)
    module = build_model(spec)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    module.train()
    with torch.no_grad():
        for x, _ in make_loader(f"imagefolder:{images}", shape, "train", 32, unlabeled=True):
            module(x)
    checkpoint = path.with_suffix(".safetensors")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(checkpoint))
    result = invoke("export", spec, "--input-shape", ",".join(map(str, shape)), "--checkpoint", checkpoint, "-o", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def teacher_onnx(images, tmp_path_factory):
    return calibrated_export("builtin:resnet20", (1, 3, 32, 32), images, tmp_path_factory.mktemp("teacher") / "r20.onnx")


@pytest.fixture(scope="module")
def pruned(teacher_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "pruned"
    result = invoke("prune", teacher_onnx, "--ratio", "0.5", "--round-to", "8", "-o", out)
    assert result.exit_code == 0, result.output
    return out



def distance_to_teacher(directory, teacher, images):
    """Mean squared difference of the logits on the folder's val images, computed here without the
    toolchain's distillation code."""
    x = torch.stack([load_dataset(f"imagefolder:{images}", (1, 3, 32, 32), split="val", unlabeled=True)[i][0]
                     for i in range(32)])
    with torch.no_grad():
        return float(((load_pruned_module(directory)(x) - teacher(x)) ** 2).mean())


def test_distill_only_moves_the_pruned_model_toward_the_unpruned_one(pruned, teacher_onnx, images, tmp_path,
                                                                      one_thread):
    work = tmp_path / "work"
    shutil.copytree(pruned, work)
    teacher = torch_module_for(load_model(teacher_onnx))[0].eval()
    before = distance_to_teacher(work, teacher, images)
    result = invoke("finetune", work, "--data", f"imagefolder:{images}", "--distill-only", "--epochs", "2",
                    "--lr", "0.02", "--batch-size", "16", "--json")
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)
    after = distance_to_teacher(work, teacher, images)
    # Measured 2.61 -> 0.51 (0.20x); with a loss that ignores the teacher, 2.61 -> 1.60 (0.61x: only the
    # BatchNorm statistics adapt to the pruned widths).
    assert after < 0.35 * before, (before, after)
    assert reported["after"]["distance"] < reported["before"]["distance"]
    assert [h["epoch"] for h in reported["history"]] == [0, 1] and "val_distance" in reported["history"][0]
    assert invoke("verify", work).exit_code == 0  # the new weights.safetensors and model.onnx agree


def test_distill_only_resumes_like_finetune(pruned, images, tmp_path, one_thread):
    """Two epochs straight vs one epoch, a kill, and a re-run: the same weights bit for bit, and the
    interrupted run left DIR untouched."""
    from toolchain.finetune import finetune_dir

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    shutil.copytree(pruned, straight)
    shutil.copytree(pruned, resumed)
    config = dict(epochs=2, lr=0.02, batch_size=32)
    finetune_dir(straight, f"imagefolder:{images}", TrainConfig(**config), distill_only=True)

    def killed(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_dir(resumed, f"imagefolder:{images}", TrainConfig(**config), distill_only=True, on_epoch=killed)
    assert filecmp.cmp(resumed / "model.onnx", pruned / "model.onnx", shallow=False)
    assert (resumed / "finetune" / "checkpoint.pt").is_file() and not (resumed / "train.json").exists()
    result = finetune_dir(resumed, f"imagefolder:{images}", TrainConfig(**config), distill_only=True)
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    a, b = load_pruned_module(straight).state_dict(), load_pruned_module(resumed).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_unlabeled_folder_without_distill_only_is_bad_input(pruned, images, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(pruned, work)
    assert_bad_input(invoke("finetune", work, "--data", f"imagefolder:{images}", "--epochs", "1"), "--distill-only")
    assert filecmp.cmp(work / "model.onnx", pruned / "model.onnx", shallow=False) and not (work / "train.json").exists()


@pytest.mark.parametrize("count", [0, 1])
def test_too_few_unlabeled_images_is_bad_input(pruned, tmp_path, count):
    folder = write_pngs(tmp_path / "few", count)
    work = tmp_path / "work"
    shutil.copytree(pruned, work)
    assert_bad_input(invoke("finetune", work, "--data", f"imagefolder:{folder}", "--distill-only"), "at least 2")
    assert not (work / "train.json").exists()


def test_distill_only_without_the_unpruned_model_is_bad_input(pruned, images, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(pruned, work)
    summary = json.loads((work / "summary.json").read_text())
    summary["source_onnx"] = str(tmp_path / "gone.onnx")
    (work / "summary.json").write_text(json.dumps(summary))
    assert_bad_input(invoke("finetune", work, "--data", f"imagefolder:{images}", "--distill-only"),
                     "needs the unpruned model")
    assert filecmp.cmp(work / "model.onnx", pruned / "model.onnx", shallow=False)


def test_unlabeled_folder_splits_and_loads(images):
    train = load_dataset(f"imagefolder:{images}", (1, 3, 32, 32), split="train", unlabeled=True)
    val = load_dataset(f"imagefolder:{images}", (1, 3, 32, 32), split="val", unlabeled=True)
    assert len(train) + len(val) == 160 and len(val) == 32
    assert not set(train.indices) & set(val.indices)
    assert np.ptp(train[0][0].numpy()) > 1.0  # a real image, normalised, not a blank
