"""Why tables and solvers use the backend's channel block as round_to (ORT CPU, batch 1).

Narrows one group at a time to widths on and off the backend's channel block and prints each
model's latency as a ratio to the unpruned one (measured interleaved). On a CPU with AVX-512,
onnxruntime's NCHWc kernels work in blocks of 16 channels: a width between two multiples of 16
is padded up and costs extra reorders, so it can be slower than the next wider aligned width.

    python bench/channel_alignment.py [--model torchvision:resnet18] [--groups conv1,layer3.0.conv2]
                                      [--widths 8,10,12] [--repeats 3] [--log PATH|-]

The ResNet-56 run in the README (`--model builtin:resnet56 --groups conv1 --widths 8,10,12 --repeats 3
--runs 60`) narrows its stage-1 stream, which the stem and 9 blocks write: 10 is what Group.choose kept
before 173a720 when a solver asked for 8 (one unit per producer).

Writes bench/results/channel_alignment.txt (date, commit, command line on top).
"""
import argparse
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.backends import get_backend  # noqa: E402
from toolchain.latency.measure import interleaved_ratio  # noqa: E402
from benchlog import logged  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--groups", default="conv1,layer3.0.conv2", help="group ids to narrow, one at a time")
    parser.add_argument("--widths", default=None,
                        help="widths to time, comma-separated (default: half to full width in half-block steps)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh sessions per width")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--log", default=None, help="log file (default bench/results/channel_alignment.txt; - for none)")
    args = parser.parse_args()
    with logged("channel_alignment", args.log):
        run(args)


def run(args) -> None:
    backend = get_backend("ort", spinning=False)
    block = backend.channel_alignment()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_spec(args.model, str(path))
        model = load_model(path)
        analysis = analyze(model)
        reference = backend.prepare(model.SerializeToString())
        print(f"{args.model} on onnxruntime CPU, channel block {block}: latency ratio to the unpruned model")
        for gid in args.groups.split(","):
            width = analysis.group(gid).channels
            widths = ([int(k) for k in args.widths.split(",")] if args.widths
                      else sorted({k for k in range(width // 2, width, block // 2)}))
            cells = []
            for k in widths:
                pruned, _ = apply_plan(model, Plan(channels={gid: {"count": k}}), analysis=analysis, check=False)
                ratios = []
                for _ in range(args.repeats):
                    with backend.prepare(pruned.SerializeToString()) as runner:
                        ratios.append(interleaved_ratio(runner, reference, warmup=3, runs=args.runs, pause_s=0.0).ratio)
                cells.append(f"{k}{'' if k % block == 0 else '*'}: " + ", ".join(f"{r:.3f}" for r in ratios))
            group = analysis.group(gid)
            print(f"  {gid} (full width {width}, {len(group.producers)} producers): " + "  ".join(cells))
        reference.close()
        print(f"(* = not a multiple of {block})")


if __name__ == "__main__":
    main()
