"""One normalisation for a model's data in every stage: `--normalize` on train, prune --data, finetune and
build (calibration and validation), and `normalize:` in a recipe. A model trained on [0,1] pixels (YOLO)
or on [-1,1] (TensorFlow weights such as EfficientNet-Lite) must be calibrated and fine-tuned on the
same inputs, not on the DATA spec's own statistics."""
import numpy as np
import pytest
import torch
import yaml

from graphs.errors import InputError
from test_cli import assert_bad_input, invoke
from toolchain.data import load_dataset

SHAPE = (3, 8, 8)


def test_named_statistics_apply_to_every_pixel():
    raw = load_dataset("digits", SHAPE, split="val", normalize="none")[0][0]
    assert 0.0 <= float(raw.min()) and float(raw.max()) <= 1.0 and float(raw.max()) > 0.5
    inception = load_dataset("digits", SHAPE, split="val", normalize="inception")[0][0]
    torch.testing.assert_close(inception, (raw - 0.5) / 0.5)
    auto = load_dataset("digits", SHAPE, split="val", normalize="auto")[0][0]
    assert not torch.allclose(auto, raw) and not torch.allclose(auto, inception)


def test_calibration_and_validation_data_follow_normalize():
    from calib.readers import load_calibration
    from toolchain.build_check import val_batches

    raw = load_calibration("digits", (1, *SHAPE), 16, normalize="none")
    assert raw.shape == (16, *SHAPE) and raw.min() >= 0.0 and raw.max() <= 1.0
    np.testing.assert_allclose(load_calibration("digits", (1, *SHAPE), 16, normalize="inception"), (raw - 0.5) / 0.5,
                               atol=1e-6)
    assert load_calibration("digits", (1, *SHAPE), 16).min() < 0.0  # the default: the set's own statistics
    (x, _), = list(val_batches("digits", (1, *SHAPE), 8, 8, normalize="none"))
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_finetune_and_baseline_train_on_the_normalisation_asked(monkeypatch, tmp_path, one_thread):
    import toolchain.baseline as baseline
    from toolchain.train import TrainConfig

    asked = []
    real = baseline.make_loader

    def spy(*args, **kwargs):
        asked.append(kwargs.get("normalize"))
        return real(*args, **kwargs)

    monkeypatch.setattr(baseline, "make_loader", spy)
    baseline.train_baseline("builtin:resnet20", "digits", str(tmp_path / "w.safetensors"),
                            TrainConfig(epochs=1, batch_size=256), (1, *SHAPE), normalize="none")
    assert asked == ["none", "none"]  # train and val


@pytest.mark.parametrize("command", [
    ["train", "builtin:resnet20", "--data", "digits", "-o", "{tmp}/w.safetensors"],
    ["build", "{tmp}/missing-but-normalize-first.onnx", "-o", "{tmp}/m.onnx"],
    ["finetune", "{tmp}", "--data", "digits"],
])
def test_unknown_normalize_is_refused_in_one_line(tmp_path, command):
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = invoke(*args, "--normalize", "zscore")
    assert_bad_input(result, "unknown normalize 'zscore'")
    assert not list(tmp_path.iterdir())


def test_recipe_normalize_is_checked(tmp_path):
    from toolchain.recipe import load_recipe

    recipe = {"model": "builtin:resnet20", "data": "digits", "out": str(tmp_path / "run"), "prune": {"budget": 0.5}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**recipe, "normalize": "none"}))
    assert load_recipe(path).normalize == "none"
    path.write_text(yaml.safe_dump({**recipe, "normalize": "zscore"}))
    with pytest.raises(InputError, match="normalize: unknown 'zscore'"):
        load_recipe(path)


def test_prune_budget_refuses_an_unknown_normalize_before_profiling(resnet20_onnx, tmp_path):
    store = tmp_path / "lut.sqlite"
    result = invoke("prune", resnet20_onnx, "-o", tmp_path / "o", "--budget", "0.5", "--data", "digits",
                    "--store", store, "--normalize", "zscore")
    assert_bad_input(result, "unknown normalize 'zscore'")
    assert not store.exists() and not (tmp_path / "o").exists()
