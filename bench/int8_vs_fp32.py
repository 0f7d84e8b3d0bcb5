"""INT8 (ONNX Runtime QDQ) vs FP32 for a pruned, fine-tuned model: top-1 and latency, in one run.

Runs the CLI end to end in a fresh folder, every step printed with its command line:
train a baseline on DATA -> export with it -> prune --ratio R -> finetune -> build fp32 -> build int8
(--calib DATA). The int8 build's manifest holds the accuracy check (FP32 vs INT8 top-1 on DATA's
validation split) and the latency ratio to FP32 (interleaved run by run with the FP32 model); the
fp32 build's manifest holds the FP32 artifact's own latency.

    python bench/int8_vs_fp32.py [--model builtin:resnet20] [--data mnist5k] [--ratio 0.3]
        [--train-epochs 3] [--finetune-epochs 2] [--workdir DIR] [--log PATH|-]

Writes bench/results/int8_vs_fp32.txt (date, commit, command line on top). Latency ratios depend on
the host's load: the log says what was measured, not what the model always does.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlog import ROOT, logged


def compress(*argv: str, as_json: bool = True) -> dict:
    """One CLI call (with --json unless told otherwise); prints the command and the time it took;
    exits on failure."""
    cmd = [sys.executable, "-m", "toolchain.cli", *argv, *(["--json"] if as_json else [])]
    print("$ compress " + shlex.join(argv), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(f"compress {argv[0]} failed with exit code {proc.returncode}")
    print(f"  ({time.time() - t0:.0f} s)")
    return json.loads(proc.stdout) if as_json else {}


def run(args, work: Path) -> None:
    base = work / "baseline.safetensors"
    if not base.is_file():  # a kept --workdir resumes after the (long) training
        trained = compress("train", args.model, "--data", args.data, "--epochs", str(args.train_epochs),
                           "-o", str(base))
        print(f"  baseline top-1 {trained['val']['top1']:.2f}% on {args.data} val")
    else:
        print(f"reusing the baseline in {base}")
    compress("export", args.model, "--checkpoint", str(base), "-o", str(work / "model.onnx"), as_json=False)
    compress("prune", str(work / "model.onnx"), "--ratio", str(args.ratio), "--round-to", "8",
             "-o", str(work / "pruned"))
    tuned = compress("finetune", str(work / "pruned"), "--data", args.data, "--epochs", str(args.finetune_epochs),
                     "--lr", str(args.lr))
    print(f"  pruned top-1 {tuned['before']['top1']:.2f}% -> fine-tuned {tuned['after']['top1']:.2f}%")
    fp32 = compress("build", str(work / "pruned"), "--precision", "fp32", "--val", args.data,
                    "-o", str(work / "m.fp32.onnx"))
    int8 = compress("build", str(work / "pruned"), "--precision", "int8", "--calib", args.data,
                    "-o", str(work / "m.int8.onnx"))
    acc, lat = int8["accuracy"], int8["latency"]
    print()
    print(f"{args.model} pruned {args.ratio:.0%} + fine-tuned {args.finetune_epochs} epochs on {args.data} "
          f"(baseline trained {args.train_epochs} epochs):")
    print(f"  top-1 on {acc['samples']} {args.data} val images: FP32 {acc['top1_fp32']:.2f}% -> INT8 "
          f"{acc['top1']:.2f}% ({-acc['top1_drop_points']:+.2f} points; top-1 agreement "
          f"{acc['top1_agreement']:.1f}%)")
    print(f"  latency, batch {lat['batch']}, ORT CPU: INT8 {lat['median_ms']:.3f} ms vs FP32 {lat['fp32_median_ms']:.3f} "
          f"ms interleaved: ratio {lat['ratio_to_fp32']:.2f}x (se {lat['ratio_se']:.3f}, {lat['runs']} runs)")
    print(f"  fp32 artifact alone: {json.dumps(fp32['latency'])}")
    print(f"  int8 calibration: {json.dumps({k: int8['calibration'][k] for k in ('data', 'count', 'method') if k in int8['calibration']})}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:resnet20")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-2, help="fine-tuning learning rate")
    ap.add_argument("--workdir", default=None,
                    help="keep the intermediate files here (default: a temporary folder); a baseline already "
                         "there is reused")
    ap.add_argument("--log", default=None, help="log file (default bench/results/int8_vs_fp32.txt; - for none)")
    args = ap.parse_args()
    with logged("int8_vs_fp32", args.log):
        if args.workdir:
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            run(args, Path(args.workdir))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                run(args, Path(tmp))


if __name__ == "__main__":
    main()
