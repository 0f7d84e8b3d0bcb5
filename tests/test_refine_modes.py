"""`prune --budget --mode auto` (toolchain/refine_modes.py): each mode to the budget, the met plan that
scores best on held-out images (BatchNorm statistics re-estimated) kept.

The table is profiled for real (few runs); each measured ratio is replaced by a scripted one just under
the budget, so every mode meets it on its first plan and host noise does not decide which modes compete.
"""
import json

import pytest
import torch
from typer.testing import CliRunner

from toolchain import refine
from toolchain.cli import app
from toolchain.data import make_loader
from toolchain.pruned_dir import load_pruned_module
from toolchain.refine import BudgetRequest
from toolchain.refine_modes import CANDIDATES, _choose, _requests, held_out, short_tune
from toolchain.train import evaluate


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_the_met_mode_with_the_best_held_out_top1_is_kept():
    c = [{"mode": "joint", "measured": 0.49, "met": True, "val_top1": 70.0},
         {"mode": "layer", "measured": 0.48, "met": True, "val_top1": 81.0},
         {"mode": "filter", "measured": 0.52, "met": False, "val_top1": 90.0}]  # misses: never kept over a met one
    assert _choose(c)["mode"] == "layer"
    assert _choose([c[0], {**c[1], "val_top1": 70.0}])["mode"] == "joint"  # a tie: the earlier mode
    refused = {"mode": "layer", "refused": "budget 0.300 is below ..."}
    assert _choose([{**c[0], "met": False}, refused, c[2]])["mode"] == "joint"  # none met: the fastest


def test_joint_competes_with_the_asked_criterion_and_with_taylor_scores():
    asked = BudgetRequest(budget=0.5, criterion="sp-lamp", layer_criterion="imprinting", max_prune=0.75)
    requests = _requests(asked)
    assert list(requests) == ["joint", "joint-taylor", "layer", "filter"]
    assert (requests["joint"].mode, requests["joint"].criterion, requests["joint"].layer_criterion) == (
        "joint", "sp-lamp", "imprinting")
    # Taylor for blocks too (mean:taylor): one currency for a narrowed layer and a removed block
    assert (requests["joint-taylor"].mode, requests["joint-taylor"].criterion, requests["joint-taylor"].layer_criterion) == (
        "joint", "taylor", None)
    assert requests["joint-taylor"].max_prune == 0.75 and requests["layer"].max_prune == 1.0  # no floor on depth
    assert list(_requests(BudgetRequest(budget=0.5, criterion="taylor"))) == ["joint", "layer", "filter"]  # asked already


def test_after_a_short_fine_tune_its_score_ranks():
    c = [{"mode": "joint", "measured": 0.49, "met": True, "val_top1": 47.6, "tuned_top1": 80.5},
         {"mode": "layer", "measured": 0.44, "met": True, "val_top1": 53.4, "tuned_top1": 78.0}]
    assert _choose(c)["mode"] == "joint"  # better before, worse after: the score after decides
    assert _choose([{k: v for k, v in x.items() if k != "tuned_top1"} for x in c])["mode"] == "layer"


def test_the_short_fine_tune_trains_every_candidate_on_the_same_images(digits_resnet20, tmp_path, one_thread):
    """Two copies tuned alike end alike (same images, same order); the tune lifts a pruned model's held-out
    score, and trains on no more than the batches asked."""
    model, _ = digits_resnet20
    out = tmp_path / "p"
    assert invoke("prune", model, "--ratio", "0.5", "--data", "digits", "-o", out).exit_code == 0
    train = make_loader("digits", (1, 3, 28, 28), "train", 64, seed=0, augment=True)
    scores = held_out(make_loader("digits", (1, 3, 28, 28), "val", 32, seed=0, shuffle=False).dataset)
    first, second, untouched = (load_pruned_module(out) for _ in range(3))
    seen = []
    hook = first.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    short_tune(first, train, batches=20)
    hook.remove()
    short_tune(second, train, batches=20)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert sum(seen) == 20 * 64  # twenty batches of the 1,438 images: one pass, no more
    assert evaluate(first, scores)["top1"] > evaluate(untouched, scores)["top1"] + 5


def test_held_out_images_are_strided_over_the_whole_split():
    dataset = list(range(10_000))  # a folder sorted by class keeps every class
    loader = held_out(dataset, images=2048)
    picked = [int(i) for batch in loader for i in batch]
    assert len(picked) == 2000 and picked[0] == 0 and picked[-1] == 9995


@pytest.mark.parametrize("tune", [0, 4])
def test_auto_mode_keeps_the_best_scoring_mode_and_records_every_one(digits_resnet20, tmp_path, monkeypatch,
                                                                    one_thread, tune):
    model, _ = digits_resnet20
    real = refine.measure_against

    def measure(reference, candidate, config, runs):  # real, with the ratio scripted just under the budget
        return {**real(reference, candidate, config, 5), "ratio": 0.59, "ratio_se": 0.005}
    monkeypatch.setattr(refine, "measure_against", measure)
    out = tmp_path / "o"
    result = invoke("prune", model, "--budget", "0.6", "--mode", "auto", "--data", "digits", "--runs", "3",
                    "--layer-criterion", "imprinting", "--store", tmp_path / "lut.sqlite", "-o", out,
                    "--auto-tune-batches", tune)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    choice = summary["mode_choice"]
    assert [c["mode"] for c in choice["candidates"]] == list(CANDIDATES)
    scored = [c for c in choice["candidates"] if "refused" not in c]
    assert scored and all(c["met"] for c in scored)
    assert all(("tuned_top1" in c) == bool(tune) for c in scored)
    best = max(scored, key=lambda c: c.get("tuned_top1", c["val_top1"]))
    assert choice["chosen"] == best["mode"] and summary["batchnorm"]["recalibrated"]
    tuned = f", {best['tuned_top1']:.2f} after the short fine-tune" if tune else ""
    assert f"mode {best['mode']}: measured 0.590 (met), held-out top-1 {best['val_top1']:.2f}{tuned} <- kept" in " ".join(
        result.stdout.split())  # rich wraps the line at the terminal's width
    # the directory written is the chosen mode's untuned model: it scores that figure on the same held-out images
    scores = held_out(make_loader("digits", (1, 3, 28, 28), "val", 32, seed=0, shuffle=False).dataset)
    assert evaluate(load_pruned_module(out), scores)["top1"] == pytest.approx(best["val_top1"])
    assert invoke("verify", out).exit_code == 0


def test_auto_mode_without_data_is_refused_before_any_profiling(resnet20_onnx, tmp_path):
    store, out = tmp_path / "lut.sqlite", tmp_path / "o"
    result = invoke("prune", resnet20_onnx, "--budget", "0.6", "--mode", "auto", "--store", store, "-o", out)
    assert result.exit_code == 2 and "needs --data" in result.output
    assert not store.exists() and not out.exists()


@pytest.mark.parametrize("args, says", [(["--mode", "joint", "--auto-tune-batches", "4"], "applies to --mode auto"),
                                        (["--mode", "auto", "--auto-tune-batches", "-1"], "must be >= 0")])
def test_a_short_fine_tune_where_it_cannot_apply_is_refused_before_profiling(resnet20_onnx, tmp_path, args, says):
    store, out = tmp_path / "lut.sqlite", tmp_path / "o"
    result = invoke("prune", resnet20_onnx, "--budget", "0.6", "--data", "digits", *args, "--store", store, "-o", out)
    assert result.exit_code == 2 and says in result.output and len(result.output.strip().splitlines()) == 1
    assert not store.exists() and not out.exists()
