"""Time analysis + surgery of torchvision resnet50 (goal: under 2 s on the 2-core machine).

Prints each phase in seconds and the ratio of the total to the 2 s goal, measured in one run, and
writes the same to bench/results/analyze_surgery.txt (with date, commit and command line):
    python bench/analyze_surgery.py [--model torchvision:resnet50] [--repeat 3] [--log PATH|-]
"""
import argparse
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.prune import uniform_plan  # noqa: E402
from benchlog import logged  # noqa: E402

GOAL_S = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="torchvision:resnet50")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--log", default=None, help="log file (default bench/results/analyze_surgery.txt; - for none)")
    args = parser.parse_args()
    with logged("analyze_surgery", args.log):
        run(args)


def run(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_spec(args.model, str(path))
        model = load_model(path)
        rows = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            analysis = analyze(model)
            blocks = analysis.blocks
            t1 = time.perf_counter()
            plan = uniform_plan(analysis, 0.3, 8)
            plan.remove = [blocks[len(blocks) // 2].id]
            apply_plan(model, plan, analysis=analysis)
            t2 = time.perf_counter()
            rows.append((t1 - t0, t2 - t1, t2 - t0))
    best = min(rows, key=lambda r: r[2])
    print(f"{args.model}: {len(analysis.groups)} groups, {len(blocks)} removable blocks")
    print(f"analyze {best[0]:.2f} s, surgery {best[1]:.2f} s, total {best[2]:.2f} s (best of {args.repeat})")
    print(f"total / goal ({GOAL_S:.0f} s) = {best[2] / GOAL_S:.2f}")
    print("every run (analyze, surgery, total s): " + "; ".join(f"{a:.2f}, {b:.2f}, {c:.2f}" for a, b, c in rows))


if __name__ == "__main__":
    main()
