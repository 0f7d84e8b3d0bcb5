"""bench/experiments/criteria_at_budget.py --merge: runs of the same experiment (rows split across
runs to fit the machine time) become one report, with joint paired against every row seed by seed;
runs of different experiments are refused with one line, exit 2, nothing written."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "experiments" / "criteria_at_budget.py"
ARGS = {"model": "builtin:resnet56", "data": "fashion-mnist", "budget": 0.75, "finetune_epochs": 2,
        "finetune_lr": 0.01, "train_subset": 10000, "train_epochs": 3, "quick": False, "tolerance": 0.03}
BASES = {"0": {"onnx": "/cache/r56-s0.onnx", "val": {"top1": 79.0}, "params": 855770},
         "1": {"onnx": "/cache/r56-s1.onnx", "val": {"top1": 78.5}, "params": 855770}}


def _row(label, mode, seed, top1, ratio=0.7):
    return {"row": label, "mode": mode, "criterion": label.split(" / ")[-1], "seed": seed, "measured_ratio": ratio,
            "params": 300000, "params_ratio": 0.35, "removed_blocks": 0, "top1_before_ft": 10.0, "top1_after_ft": top1}


def _run_json(path: Path, rows: list[dict], **args) -> Path:
    path.write_text(json.dumps({"args": {**ARGS, **args}, "baselines": BASES, "baseline_params": 855770,
                                "rows": rows, "seconds": 100.0}))
    return path


def _merge(tmp_path, *runs):
    out = tmp_path / "merged.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--merge", ",".join(map(str, runs)), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    return proc, out


def test_merge_pairs_joint_with_every_row(tmp_path):
    width = _run_json(tmp_path / "a.json", [_row("filter / taylor", "filter", 0, 79.0), _row("filter / taylor", "filter", 1, 79.5),
                                            _row("joint / sp-lamp", "joint", 0, 80.0), _row("joint / sp-lamp", "joint", 1, 78.0)])
    depth = _run_json(tmp_path / "b.json", [_row("layer / imprinting", "layer", 0, 81.0, 0.6),
                                            _row("layer / imprinting", "layer", 1, 77.0, 0.6)])
    proc, out = _merge(tmp_path, width, depth)
    assert proc.returncode == 0, proc.stderr
    merged = json.loads(out.read_text())
    assert len(merged["rows"]) == 6 and merged["seconds"] == 200.0
    md = out.with_suffix(".md").read_text()
    assert "| layer / imprinting | 0.600 ± 0.000 (n=2) |" in md  # every run's rows in one table
    # joint minus the row, per seed: baseline +1.0 / -0.5, taylor +1.0 / -1.5, imprinting -1.0 / +1.0
    assert "| unpruned baseline | 0.25 ± 1.06 (n=2) | 1 of 2 |" in md
    assert "| filter / taylor | -0.25 ± 1.77 (n=2) | 1 of 2 |" in md
    assert "| layer / imprinting | 0.00 ± 1.41 (n=2) | 1 of 2 |" in md
    assert out.with_suffix(".png").stat().st_size > 0


def test_merge_refuses_other_experiments(tmp_path):
    a = _run_json(tmp_path / "a.json", [_row("joint / sp-lamp", "joint", 0, 80.0)])
    b = _run_json(tmp_path / "b.json", [_row("layer / imprinting", "layer", 0, 81.0)], budget=0.6)
    proc, out = _merge(tmp_path, a, b)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {b} is not the same experiment as {a} (it differs in budget)"]
    assert not out.exists() and not out.with_suffix(".md").exists()
    proc, _ = _merge(tmp_path, a, tmp_path / "missing.json")
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot read a run to merge")
