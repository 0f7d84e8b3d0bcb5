"""Fine-tuning on real data: loss goes down, checkpoints resume, weights land in the ONNX with parity."""
import json
import math

import pytest
import torch

from toolchain.data import make_loader
from toolchain.train import TrainConfig, evaluate, train
from toolchain.zoo import build_model

SHAPE = (1, 3, 32, 32)
NATIVE = (1, 3, 8, 8)  # digits at their own size: an epoch of resnet20 takes seconds, not a minute


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


def test_a_one_epoch_run_decays_its_lr_at_half_and_three_quarters_of_its_batches():
    """The schedule counts batches: a one-epoch fine-tune ends at lr x0.01, as the CLI's help says
    (counted in epochs it never decayed: a short fine-tune ended at its full lr)."""
    from toolchain.train import lr_milestones
    batches = small_loader("train", n=2) * 4  # 8 real batches
    seen = []
    history = train(build_model("builtin:resnet20"), batches, None, TrainConfig(epochs=1, lr=0.04, seed=0),
                    on_epoch=lambda epoch, record: seen.append(record["lr"]))
    assert seen == [history[0]["lr"]] and history[0]["lr"] == pytest.approx(0.04 * 0.01)
    assert lr_milestones(TrainConfig(epochs=1), 8) == [4, 6]
    assert lr_milestones(TrainConfig(epochs=3), 10) == [15, 22]
    assert lr_milestones(TrainConfig(epochs=6, step_epochs=2), 10) == [20, 40]
    assert lr_milestones(TrainConfig(epochs=1), 1) == [1]


class Killed(Exception):
    """Stands for the process being killed between two epochs."""


def run(stops, checkpoint_dir, epochs=2):
    """Train builtin:resnet20 on real digits (shuffled, augmented) for `epochs`, calling train() once per
    entry of `stops` with the same checkpoint dir: an entry n kills the run after its epoch n, None lets
    it finish (each call a fresh process: fresh module, fresh loader). Returns the final module, the
    checkpoint and the history."""
    val = [b for _, b in zip(range(2), make_loader("digits", NATIVE, "val", 32, seed=0, shuffle=False))]

    def killer(stop):
        def on_epoch(epoch, record):
            if epoch == stop:
                raise Killed
        return on_epoch

    for stop in stops:
        torch.manual_seed(123)  # a fresh process's init; the checkpoint must override it
        module = build_model("builtin:resnet20")
        loader = make_loader("digits", NATIVE, "train", 128, seed=0, augment=True, shuffle=True)
        try:
            history = train(module, loader, val, TrainConfig(epochs=epochs, lr=0.02, seed=0),
                            checkpoint_dir=checkpoint_dir, on_epoch=killer(stop))
        except Killed:
            continue
    return module, torch.load(checkpoint_dir / "checkpoint.pt", weights_only=True), history


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, one_thread):
    """Two epochs in one go vs a run killed after its first epoch and resumed: same weights, optimizer
    state (momentum buffers), scheduler (its lr drops fall inside the second epoch) and history, bit for bit."""
    straight, state_a, history_a = run([None], tmp_path / "a")
    resumed, state_b, history_b = run([0, None], tmp_path / "b")
    assert [h["epoch"] for h in history_b] == [0, 1] and state_b["epoch"] == 1
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    momentum_a, momentum_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert momentum_a.keys() == momentum_b.keys() and momentum_a
    for key in momentum_a:
        assert torch.equal(momentum_a[key]["momentum_buffer"], momentum_b[key]["momentum_buffer"]), key
    assert state_a["scheduler"] == state_b["scheduler"]
    assert history_a == history_b and history_a[1]["lr"] == pytest.approx(0.02 * 0.01)


def test_extending_a_finished_run_moves_its_lr_drops(tmp_path, one_thread):
    """A finished 1-epoch run extended to 4 epochs trains on at the 4-epoch schedule: back at the full lr,
    x0.1 after half its batches, x0.01 after three quarters (each record's lr is its epoch's last); not
    at the 1-epoch run's x0.01 throughout, whose drops had all passed."""
    _, _, first = run([None], tmp_path, epochs=1)
    _, state, extended = run([None], tmp_path, epochs=4)
    assert first[0]["lr"] == pytest.approx(0.02 * 0.01)
    assert [h["epoch"] for h in extended] == [0, 1, 2, 3] and extended[0] == first[0]
    assert [h["lr"] for h in extended[1:]] == pytest.approx([0.02 * 0.1, 0.02 * 0.01, 0.02 * 0.01])
    assert sorted(state["scheduler"]["milestones"]) == [2 * state["scheduler"]["last_epoch"] // 4,
                                                       3 * state["scheduler"]["last_epoch"] // 4]


def test_finetune_dir_writes_weights_into_onnx_with_parity(resnet20_onnx, tmp_path, one_thread):
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


def test_evaluate_matches_hand_computed_accuracy():
    """Logits given directly (an identity model), 6 classes, two batches: top-1, top-5 and the mean
    cross-entropy computed by hand."""
    rows = [[5, 4, 3, 2, 1, 0], [5, 4, 3, 2, 1, 0], [5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 9]]
    labels = [0, 4, 5, 5]  # top-1 hit; 5th best (top-5 only); last (neither); top-1 hit
    x, y = torch.tensor(rows, dtype=torch.float32), torch.tensor(labels)
    metrics = evaluate(torch.nn.Identity(), [(x[:3], y[:3]), (x[3:], y[3:])], torch.device("cpu"))
    lse = [math.log(sum(math.exp(v) for v in row)) for row in rows]
    loss = sum(l - row[t] for l, row, t in zip(lse, rows, labels)) / 4
    assert metrics["count"] == 4
    assert metrics["top1"] == pytest.approx(50.0) and metrics["top5"] == pytest.approx(75.0)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-6)
