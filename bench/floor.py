"""The fastest plan a width rule allows, measured: how low can `prune --budget` go on this host?

`prune --budget` refuses a budget below the predicted floor, and a budget near it lands on the floor.
This builds the plan no solver can beat: every prunable group at its narrowest allowed width
(graphs/alignment.py, for each --round-to), once alone and once with a disjoint set of the removable
blocks removed too (the depth anchor's pick), and measures each interleaved with the unpruned model, the way
prune's final measurement does. If that ratio is above a budget, no plan under that width rule
meets it on this host, whatever the criterion or solver. Issue 11 asks for 0.6 on YOLO at 640.

    python bench/floor.py [--models ultralytics:yolov8n.yaml,ultralytics:yolo11n.yaml] [--size 640]
                          [--round-to 16,8] [--runs 60] [--log PATH|-]

Writes bench/results/floor.txt (date, commit, command line and load on top).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import onnx  # noqa: E402

from benchlog import logged  # noqa: E402
from graphs.alignment import aligned_widths  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.anchors import anchor_blocks  # noqa: E402
from toolchain.latency.config import ProfileConfig  # noqa: E402
from toolchain.refine import measure_against  # noqa: E402


def narrowest_plan(analysis, round_to: int, blocks: bool) -> Plan:
    """Every prunable group at its narrowest allowed width; a disjoint set of blocks removed."""
    channels = {}
    for g in analysis.groups:
        options = aligned_widths(g.channels, g.multiplicity, round_to) if g.prunable else []
        if options:
            channels[g.id] = {"count": int(options[0])}
    removed = anchor_blocks(analysis.blocks, 1.0) if blocks else []
    return Plan(channels=channels, remove=removed, round_to=round_to)


def run(args, work: Path) -> None:
    for spec in args.models.split(","):
        reference = work / "model.onnx"
        export_spec(spec, str(reference), input_shape=(1, 3, args.size, args.size))
        model = load_model(reference)
        analysis = analyze(model)
        prunable = sum(g.prunable for g in analysis.groups)
        for round_to in (int(r) for r in args.round_to.split(",")):
            for blocks in (False, True) if analysis.blocks else (False,):
                plan = narrowest_plan(analysis, round_to, blocks)
                pruned, _ = apply_plan(model, plan, analysis=analysis, check=False)
                path = work / "narrowest.onnx"
                onnx.save(pruned, str(path))
                m = measure_against(str(reference), str(path), ProfileConfig(), args.runs)
                print(f"{spec} at {args.size}: {len(plan.channels)} of {prunable} prunable groups at their narrowest "
                      f"(round_to {round_to}), {len(plan.remove)} of {len(analysis.blocks)} blocks removed: "
                      f"measured {m['ratio']:.3f} +- {m['ratio_se']:.3f} ({m['pruned_ms']:.1f} vs "
                      f"{m['reference_ms']:.1f} ms)", flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ultralytics:yolov8n.yaml,ultralytics:yolo11n.yaml")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--round-to", default="16,8", help="width rules to try (the ORT CPU block is 16)")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--log", help="log file (default bench/results/floor.txt; '-' for none)")
    args = ap.parse_args(argv)
    with logged("floor", args.log), tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
