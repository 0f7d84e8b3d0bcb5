"""Fine-tuning on real data: loss goes down, checkpoints resume, weights land in the ONNX with parity."""
import json

import pytest
import torch

from toolchain.data import make_loader
from toolchain.train import TrainConfig, evaluate, train
from toolchain.zoo import build_model

SHAPE = (1, 3, 32, 32)


def small_loader(split, n=4):
    loader = make_loader("digits", SHAPE, split, 32, seed=0, shuffle=False)
    batches = [b for _, b in zip(range(n), loader)]
    return batches


def test_training_lowers_the_loss_on_a_real_batch():
    torch.manual_seed(0)
    module = build_model("builtin:resnet20")
    batches = small_loader("train")
    x, y = batches[0]
    before = torch.nn.functional.cross_entropy(module.eval()(x), y).item()
    train(module, batches * 5, None, TrainConfig(epochs=2, lr=0.05, seed=0))
    after = torch.nn.functional.cross_entropy(module.eval()(x), y).item()
    assert after < before


def test_resume_continues_from_the_saved_epoch(tmp_path):
    batches = small_loader("train", 2)
    config = TrainConfig(epochs=3, lr=0.01, seed=0)
    seen = []
    module = build_model("builtin:resnet20")
    train(module, batches, batches, TrainConfig(epochs=2, lr=0.01, seed=0), checkpoint_dir=tmp_path,
          on_epoch=lambda e, r: seen.append(e))
    assert seen == [0, 1]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    resumed = []
    fresh = build_model("builtin:resnet20")
    history = train(fresh, batches, batches, config, checkpoint_dir=tmp_path, on_epoch=lambda e, r: resumed.append(e))
    assert resumed == [2] and [h["epoch"] for h in history] == [0, 1, 2]
    # the resumed module started from the checkpoint, not from scratch
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_finetune_dir_writes_weights_into_onnx_with_parity(resnet20_onnx, tmp_path):
    from toolchain.finetune import finetune_dir
    from toolchain.prune import prune_to_dir, uniform_plan
    from toolchain.verify import verify_dir
    from graphs.deps import analyze
    from graphs.onnx_io import initializer_arrays, load_model

    out = tmp_path / "pruned"
    prune_to_dir(str(resnet20_onnx), str(out), uniform_plan(analyze(load_model(resnet20_onnx)), 0.5, 8))
    before = initializer_arrays(load_model(out / "model.onnx"))["conv1.weight"].copy()
    result = finetune_dir(out, "digits", TrainConfig(epochs=1, lr=0.01, batch_size=64))
    after = initializer_arrays(load_model(out / "model.onnx"))["conv1.weight"]
    assert not (before == after).all()
    assert verify_dir(out).parity.ok
    record = json.loads((out / "train.json").read_text())
    assert record["after"]["top1"] == pytest.approx(result["after"]["top1"]) and len(record["history"]) == 1


def test_evaluate_reports_top1_and_top5():
    module = build_model("builtin:resnet20")
    metrics = evaluate(module, small_loader("val", 2))
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100 and metrics["count"] == 64
