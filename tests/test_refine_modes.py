"""`prune --budget --mode auto` (toolchain/refine_modes.py): each mode to the budget, the met plan that
scores best on held-out images (BatchNorm statistics re-estimated) kept.

The table is profiled for real (few runs); each measured ratio is replaced by a scripted one just under
the budget, so every mode meets it on its first plan and host noise does not decide which modes compete.
"""
import json

import pytest
from typer.testing import CliRunner

from toolchain import refine
from toolchain.cli import app
from toolchain.data import make_loader
from toolchain.pruned_dir import load_pruned_module
from toolchain.refine_modes import MODES, _choose, held_out
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


def test_held_out_images_are_strided_over_the_whole_split():
    dataset = list(range(10_000))  # a folder sorted by class keeps every class
    loader = held_out(dataset, images=2048)
    picked = [int(i) for batch in loader for i in batch]
    assert len(picked) == 2000 and picked[0] == 0 and picked[-1] == 9995


def test_auto_mode_keeps_the_best_scoring_mode_and_records_every_one(digits_resnet20, tmp_path, monkeypatch,
                                                                    one_thread):
    model, _ = digits_resnet20
    real = refine.measure_against

    def measure(reference, candidate, config, runs):  # real, with the ratio scripted just under the budget
        return {**real(reference, candidate, config, 5), "ratio": 0.59, "ratio_se": 0.005}
    monkeypatch.setattr(refine, "measure_against", measure)
    out = tmp_path / "o"
    result = invoke("prune", model, "--budget", "0.6", "--mode", "auto", "--data", "digits", "--runs", "3",
                    "--layer-criterion", "imprinting", "--store", tmp_path / "lut.sqlite", "-o", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    choice = summary["mode_choice"]
    assert [c["mode"] for c in choice["candidates"]] == list(MODES)
    scored = [c for c in choice["candidates"] if "refused" not in c]
    assert scored and all(c["met"] for c in scored)
    best = max(scored, key=lambda c: c["val_top1"])
    assert choice["chosen"] == best["mode"] and summary["batchnorm"]["recalibrated"]
    assert f"mode {best['mode']}: measured 0.590 (met), held-out top-1 {best['val_top1']:.2f} <- kept" in result.stdout
    # the directory written is the chosen mode's model: it scores that figure on the same held-out images
    scores = held_out(make_loader("digits", (1, 3, 28, 28), "val", 32, seed=0, shuffle=False).dataset)
    assert evaluate(load_pruned_module(out), scores)["top1"] == pytest.approx(best["val_top1"])
    assert invoke("verify", out).exit_code == 0


def test_auto_mode_without_data_is_refused_before_any_profiling(resnet20_onnx, tmp_path):
    store, out = tmp_path / "lut.sqlite", tmp_path / "o"
    result = invoke("prune", resnet20_onnx, "--budget", "0.6", "--mode", "auto", "--store", store, "-o", out)
    assert result.exit_code == 2 and "needs --data" in result.output
    assert not store.exists() and not out.exists()
