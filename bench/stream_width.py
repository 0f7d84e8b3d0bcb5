"""What a residual stream one unit off the channel block costs: resnet56 with its stage-1 stream (16 wide,
written by the stem and 9 blocks) kept 8, 10 or 12 wide, each timed interleaved with the unpruned model
(ORT CPU, batch 1, the tables' protocol). The widths below the block are what Group.choose produced
before 173a720 when a solver asked for 8: it kept one unit per producer, 10 of them.

    python bench/stream_width.py [--repeats 3] [--log bench/results/stream_width.txt]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchlog import logged

from graphs.deps import analyze
from graphs.onnx_io import load_model
from graphs.plan import Plan
from graphs.surgery import apply_plan
from toolchain.export import export_spec
from toolchain.latency.backends import get_backend
from toolchain.latency.config import ProfileConfig, resolve_round_to
from toolchain.latency.cpu import cpu_channel_block, cpu_name
from toolchain.latency.measure import interleaved_ratio

SHAPE = [1, 3, 32, 32]
WIDTHS = (8, 10, 12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fresh sessions per width")
    p.add_argument("--log", default="bench/results/stream_width.txt")
    args = p.parse_args()
    with logged("stream_width", args.log), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet56.onnx"
        export_spec("builtin:resnet56", path, SHAPE, num_classes=10)  # latency does not depend on the weights
        model = load_model(str(path))
        analysis = analyze(model)
        stream = max((g for g in analysis.groups if g.prunable), key=lambda g: len(g.producers))
        config = resolve_round_to(ProfileConfig(backend="ort"))
        backend = get_backend("ort", **config.backend_options())
        print(f"{cpu_name()}, channel block {cpu_channel_block()}; stream {stream.id}: {stream.channels} wide, "
              f"{len(stream.producers)} producers; ratio to the unpruned model, {args.repeats} fresh sessions each")
        reference = backend.prepare(model.SerializeToString(), batch=1)
        try:
            for k in WIDTHS:
                plan = Plan(channels={stream.id: {"keep": list(range(k))}})
                pruned, _ = apply_plan(model, plan, analysis=analysis)
                ratios = []
                for _ in range(args.repeats):
                    with backend.prepare(pruned.SerializeToString(), batch=1) as candidate:
                        ratios.append(interleaved_ratio(candidate, reference, warmup=config.warmup, runs=60,
                                                        pause_s=config.pause_s).ratio)
                print(f"  {k:2d} wide: " + ", ".join(f"{r:.3f}" for r in ratios))
        finally:
            reference.close()


if __name__ == "__main__":
    main()
