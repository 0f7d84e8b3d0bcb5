"""`compress prune --budget` on YOLO (issue 11's goal): yolov8n and yolo11n at 640x640 on ORT CPU,
filter and joint modes, each pruned plan verified against the synced torch module; and Torch-Pruning 1.6
on yolov8n at the parameters compress's filter-mode plan kept (bench/tp_yolo.py: its YOLOv8 example's
approach), its exported ONNX timed against the same unpruned ONNX the same way prune measures.

Latency is measured; on a shared machine the ratios are noisier (PLATFORM.md), so the log records the
load average at the start and the end:

    nice -n 10 python bench/budget_yolo.py [--budget 0.6] [--models yolov8n,yolo11n] [--modes filter,joint]
                                           [--size 640] [--runs N] [--no-torch-pruning] [--log PATH]

One line per run: measured ratio +- its standard error vs the budget, whether the ceiling rule met it
(ratio <= budget + 1 se) and whether it landed within 3% below, parameters, verify's max diff. The log
(bench/results/budget_yolo.txt by default) is written by bench/benchlog.py. Needs .[yolo] and .[bench].
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlog import attempt_line, logged  # noqa: E402
from cli_json import compress  # noqa: E402

SPECS = {"yolov8n": "ultralytics:yolov8n.yaml", "yolo11n": "ultralytics:yolo11n.yaml"}


def export(name: str, size: int, work: Path) -> Path:
    onnx_path = work / f"{name}.onnx"
    if not onnx_path.exists():
        done = subprocess.run([sys.executable, "-m", "toolchain.cli", "export", SPECS[name], "--input-shape",
                               f"1,3,{size},{size}", "-o", str(onnx_path)], cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{name}: export failed: {done.stderr.strip()[-300:]}")
    return onnx_path


def verdict(ratio: float, se: float, budget: float) -> str:
    met = ratio <= budget + se
    return f"met {met}, within 3% below {met and ratio >= budget - 0.03}"


def one_run(name: str, mode: str, args, work: Path) -> dict:
    onnx_path = export(name, args.size, work)
    out = work / f"{name}-{mode}"
    summary = compress("prune", str(onnx_path), "--budget", str(args.budget), "--mode", mode, "--backend", "ort",
                       "-o", str(out), "--store", str(work / f"{name}.sqlite"), *(["--runs", str(args.runs)] if args.runs else []))
    if "error" in summary:
        print(f"{name} {mode}: prune refused: {summary['error']}", flush=True)
        return {}
    check = compress("verify", str(out))
    lat = summary["latency"]
    print(f"{name} {mode}: measured {lat['measured']:.3f} +- {lat['measured_se']:.3f} (budget {args.budget}, "
          f"{verdict(lat['measured'], lat['measured_se'], args.budget)}), predicted {lat['predicted']:.3f}, "
          f"{lat['pruned_ms']:.1f} ms vs {lat['reference_ms']:.1f} ms, params {summary['params']['before']:,} -> "
          f"{summary['params']['after']:,}, blocks removed {len(summary.get('removed', []))}, verify "
          f"{'PASS' if check.get('ok') else 'FAIL'} max diff {check.get('max_abs_diff')}", flush=True)
    for row in lat.get("history", []):  # every plan the refinement measured, and the one it chose
        print(attempt_line(row), flush=True)
    return summary


def torch_pruning_run(name: str, target_params: int, args, work: Path) -> None:
    """Torch-Pruning at compress's parameter count, its ONNX timed against the unpruned ONNX."""
    from tp_yolo import at_params, params
    from toolchain.export import export_onnx
    from toolchain.latency.config import ProfileConfig
    from toolchain.refine import measure_against
    from toolchain.zoo import build_model

    model = build_model(SPECS[name]).eval()
    pruned, ratio = at_params(model, 320, target_params)  # the trace size does not change what is pruned
    tp_onnx = work / f"{name}-torch-pruning.onnx"
    export_onnx(pruned, (1, 3, args.size, args.size), tp_onnx)
    m = measure_against(str(export(name, args.size, work)), str(tp_onnx), ProfileConfig(), 60)  # prune's final measurement
    print(f"{name} torch-pruning 1.6 (uniform ratio {ratio:.3f}, GroupMagnitudeImportance p=2, round_to 8): measured "
          f"{m['ratio']:.3f} +- {m['ratio_se']:.3f} (budget {args.budget}, {verdict(m['ratio'], m['ratio_se'], args.budget)}), "
          f"{m['pruned_ms']:.1f} ms vs {m['reference_ms']:.1f} ms, params {params(model):,} -> {params(pruned):,} "
          f"(compress filter: {target_params:,})", flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--models", default="yolov8n,yolo11n")
    ap.add_argument("--modes", default="filter,joint")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--runs", type=int, default=0, help="interleaved pairs per table entry (default: prune's)")
    ap.add_argument("--no-torch-pruning", action="store_true", help="skip the Torch-Pruning row on yolov8n")
    ap.add_argument("--log", help="log file (default bench/results/budget_yolo.txt; '-' for none)")
    args = ap.parse_args(argv)
    with logged("budget_yolo", args.log), tempfile.TemporaryDirectory(prefix="budget-yolo-") as tmp:
        for name in args.models.split(","):
            kept = {mode: one_run(name, mode, args, Path(tmp)) for mode in args.modes.split(",")}
            if name == "yolov8n" and not args.no_torch_pruning and kept.get("filter"):
                torch_pruning_run(name, kept["filter"]["params"]["after"], args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
