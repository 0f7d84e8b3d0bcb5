"""The torchvision sweep (bench/sweep_torchvision.py): per-model rows, and the full sweep (slow)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_sweep():
    spec = importlib.util.spec_from_file_location("sweep_torchvision", ROOT / "bench" / "sweep_torchvision.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sweep_torchvision", mod)
    spec.loader.exec_module(mod)
    return mod


sweep = _load_sweep()

ROW_FIELDS = {"model", "params_m", "groups", "prunable", "blocks", "removed_block", "max_diff", "scale",
              "tolerance", "recalibrated", "degenerate", "status", "stage", "error", "seconds"}


@pytest.mark.parametrize("name", ["squeezenet1_0", "mobilenet_v3_small"])
def test_run_model_row(name, tmp_path):
    row = sweep.run_model(name, tmp_path)
    assert ROW_FIELDS <= set(row)
    assert row["status"] == "ok", row.get("traceback") or row.get("error")
    assert row["model"] == name
    assert row["error"] is None and row["stage"] is None
    assert row["params_m"] > 0.5
    assert row["groups"] >= row["prunable"] > 0
    assert row["blocks"] >= 0
    if row["blocks"]:
        assert isinstance(row["removed_block"], str) and row["removed_block"]
    else:
        assert row["removed_block"] is None
    assert 0.0 <= row["max_diff"] <= row["tolerance"]
    assert not row["degenerate"]
    assert row["params_after_m"] < row["params_m"]


def test_error_row_is_honest(tmp_path):
    row = sweep.run_model("no_such_model", tmp_path)
    assert row["status"].startswith("error: ")
    assert row["stage"] == "export"
    assert "\n" not in row["status"]


def test_table_counts_only_ok():
    rows = [{"model": "a", "status": "ok"}, {"model": "b", "status": "parity-fail", "error": "x"},
            {"model": "c", "status": "error: ValueError: boom", "stage": "prune"}]
    text = sweep.table(rows)
    assert text.rstrip().endswith("1 of 3 models pruned with parity")
    assert "error: ValueError: boom [prune]" in text


@pytest.mark.slow
def test_full_sweep(tmp_path):
    out = tmp_path / "sweep.jsonl"
    assert sweep.main(["--out", str(out), "--max-params", "150", "--timeout", "600"]) == 0
    rows = list(sweep.read_rows(out).values())
    names, _, _ = sweep.select_models(None, 150.0)
    assert {r["model"] for r in rows} == set(names)
    cnns = [n for n in names if sweep.is_cnn(n)]
    failing = {r["model"]: r["status"] for r in rows if r["status"] != "ok"}
    # every CNN by name, not a count that other models could make up for
    assert not [n for n in cnns if n in failing], failing
