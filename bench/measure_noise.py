"""How repeatable is an interleaved latency ratio on this host?

Times torchvision resnet18 (random weights) against itself, two separate onnxruntime CPU sessions
interleaved run by run, 5 repetitions, with and without a pause after each call. A perfect protocol
prints ratios of 1.000; the spread (max - min, in points of ratio) is the noise a latency table sees.

    python bench/measure_noise.py [--runs 60] [--reps 5] [--pauses 0,0.1] [--log PATH|-]

Writes bench/results/measure_noise.txt (date, commit, command line on top).
"""
from __future__ import annotations

import argparse
import sys
import warnings
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from toolchain.latency.backends import get_backend  # noqa: E402
from toolchain.latency.measure import INTERLEAVED, interleaved_ratio  # noqa: E402
from benchlog import logged  # noqa: E402


def export_resnet18(path: Path) -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter is deliberate
    model = torchvision.models.resnet18(weights=None).eval()
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(str(path))
    m.ir_version = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14
    onnx.save(m, str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=INTERLEAVED["runs"])
    ap.add_argument("--warmup", type=int, default=INTERLEAVED["warmup"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pauses", default="0,0.1")
    ap.add_argument("--target-se", type=float, default=None,
                    help=f"extend runs until the ratio's se is below this (the library default is "
                         f"{INTERLEAVED['target_se']}); default here: fixed --runs")
    ap.add_argument("--max-runs", type=int, default=None, help="default: 4 x --runs")
    ap.add_argument("--log", default=None, help="log file (default bench/results/measure_noise.txt; - for none)")
    args = ap.parse_args()
    with logged("measure_noise", args.log):
        run(args)


def run(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.onnx"
        export_resnet18(path)
        backend = get_backend("ort")
        print(f"device: {backend.device()}")
        print(f"resnet18 vs itself, interleaved, warmup={args.warmup} runs={args.runs}, {args.reps} repetitions")
        for pause in (float(p) for p in args.pauses.split(",")):
            ratios, pairs, medians, ses, counts = [], [], [], [], []
            t0 = time.perf_counter()
            for _ in range(args.reps):
                a, b = backend.prepare(path), backend.prepare(path)  # fresh sessions, like a table build
                res = interleaved_ratio(a, b, warmup=args.warmup, runs=args.runs, pause_s=pause,
                                        target_se=args.target_se, max_runs=args.max_runs)
                ratios.append(res.ratio_of_medians)
                pairs.append(res.ratio)
                ses.append(res.ratio_se)
                counts.append(res.candidate.count)
                medians.append(res.reference.median)
                a.close(), b.close()
            wall = time.perf_counter() - t0
            print(f"pause {pause:.3f} s: reference median {min(medians):.1f}-{max(medians):.1f} ms, "
                  f"{wall:.0f} s wall, estimated se of the pair ratio {min(ses):.3f}-{max(ses):.3f}, runs {min(counts)}-{max(counts)}")
            for label, rs in (("ratio of medians", ratios), ("median of pair ratios", pairs)):  # tables store the latter
                print(f"  {label:22s} {' '.join(f'{r:.3f}' for r in rs)} | spread "
                      f"{(max(rs) - min(rs)) * 100:.1f} pts, worst |ratio-1| "
                      f"{max(abs(r - 1) for r in rs) * 100:.1f} pts")


if __name__ == "__main__":
    main()
