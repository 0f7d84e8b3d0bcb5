"""`compress prune --budget` on YOLO (issue 11's goal): yolov8n and yolo11n at 640x640 on ORT CPU,
filter and joint modes, each pruned plan verified against the synced torch module.

Latency is measured, so run it on a quiet machine (on a shared one the ratios drift; PLATFORM.md):

    python bench/budget_yolo.py [--budget 0.6] [--models yolov8n,yolo11n] [--modes filter,joint]
                                [--size 640] [--runs N] [--out bench/results/budget_yolo.txt]

Prints one line per run (measured ratio vs the budget, whether the ceiling rule met it, parameters,
verify's max diff) and writes them, headed by date, commit and command, to --out. Needs .[yolo].
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"yolov8n": "ultralytics:yolov8n.yaml", "yolo11n": "ultralytics:yolo11n.yaml"}


def compress(*args: str) -> dict:
    """Run the CLI (as a user would), return its --json output; a failure is reported, not raised."""
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", *args, "--json"], cwd=ROOT, capture_output=True, text=True)
    if run.returncode not in (0, 1):
        return {"error": (run.stderr.strip().splitlines() or ["exit %d" % run.returncode])[-1]}
    return json.loads(run.stdout)


def one_run(name: str, mode: str, args, work: Path) -> str:
    onnx_path = work / f"{name}.onnx"
    if not onnx_path.exists():
        exported = subprocess.run([sys.executable, "-m", "toolchain.cli", "export", SPECS[name], "--input-shape",
                                   f"1,3,{args.size},{args.size}", "-o", str(onnx_path)], cwd=ROOT, capture_output=True, text=True)
        if exported.returncode:
            return f"{name} {mode}: export failed: {exported.stderr.strip()[-300:]}"
    out = work / f"{name}-{mode}"
    extra = ["--runs", str(args.runs)] if args.runs else []
    summary = compress("prune", str(onnx_path), "--budget", str(args.budget), "--mode", mode, "--backend", "ort",
                       "-o", str(out), "--store", str(work / "latency.sqlite"), *extra)
    if "error" in summary:
        return f"{name} {mode}: prune refused: {summary['error']}"
    verify = compress("verify", str(out))
    lat = summary["latency"]
    return (f"{name} {mode}: measured {lat['measured']:.3f} +- {lat['measured_se']:.3f} (budget {args.budget}, "
            f"met {lat['met']}), predicted {lat['predicted']:.3f}, {lat['pruned_ms']:.1f} ms vs {lat['reference_ms']:.1f} ms, params {summary['params']['before']:,} -> {summary['params']['after']:,}, "
            f"blocks removed {len(summary.get('removed', []))}, verify {'PASS' if verify.get('ok') else 'FAIL'} "
            f"max diff {verify.get('max_abs_diff')}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--models", default="yolov8n,yolo11n")
    ap.add_argument("--modes", default="filter,joint")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--runs", type=int, default=0, help="interleaved pairs per measurement (default: prune's)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "budget_yolo.txt")
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}",
             f"# python bench/budget_yolo.py {' '.join(argv)}"]
    with tempfile.TemporaryDirectory(prefix="budget-yolo-") as tmp:
        for name in args.models.split(","):
            for mode in args.modes.split(","):
                lines.append(one_run(name, mode, args, Path(tmp)))
                print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
