"""ONNX files with no torch source (issue 11's goal): torchvision resnet50 and mobilenet_v2 exported by plain
`torch.onnx.export` (eval mode, default options: BatchNorm folded into Conv, no compress metadata), with the
legacy exporter (dynamo=False) and the dynamo exporter. Each is analysed, pruned 30% (round_to 8) and pruned
to `--budget` (ORT CPU, joint mode) by the CLI, and every pruned graph is checked against the original graph
with the same channels masked: max |diff| <= 1e-4 x max(1, max |output|) (the relative figure is printed).
BatchNorm statistics are set from four random batches before export, so the outputs are well scaled.

    nice -n 10 python bench/onnx_plain.py [--models resnet50,mobilenet_v2] [--exporters legacy,dynamo]
                                          [--budget 0.6] [--runs N] [--log PATH]

The log (bench/results/onnx_plain.txt by default) is written by bench/benchlog.py, with the load average at
the start and the end (the budget rows measure latency).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlog import attempt_line, logged  # noqa: E402
from cli_json import compress  # noqa: E402

REL = 1e-4


def plain_export(name: str, exporter: str, path: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    # Random weights with fresh BatchNorm statistics give outputs of ~1e-10 (mobilenet_v2), a degenerate
    # scale no parity figure means anything at: set the statistics from a few random batches first, as a
    # trained model's would be set from its data (DESIGN.md).
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the batches
    with torch.no_grad():
        model.train()
        for _ in range(4):
            model(torch.randn(8, 3, 224, 224))
    model.eval()
    with contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter's progress lines stay out of the log
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=exporter == "dynamo",
                          **({"external_data": False} if exporter == "dynamo" else {}))


def parity_line(summary: dict) -> str:
    p = summary["masked_parity"]
    rel = p["max_abs_diff"] / max(1.0, p["output_scale"])
    return f"masked parity {p['max_abs_diff']:.3g} at output scale {p['output_scale']:.3g} (relative {rel:.2g}, {'<=' if rel <= REL else '>'} 1e-4)"


def one_model(name: str, exporter: str, args, work: Path) -> None:
    path = work / f"{name}-{exporter}.onnx"
    plain_export(name, exporter, path)
    t0 = time.time()
    analysis = compress("analyze", str(path))
    tag = f"{name} ({exporter} export)"
    if "error" in analysis:
        print(f"{tag}: analyze refused: {analysis['error']}", flush=True)
        return
    groups = analysis["groups"]
    print(f"{tag}: {sum(g['prunable'] for g in groups)} prunable groups of {len(groups)}, {len(analysis['blocks'])} "
          f"removable blocks ({time.time() - t0:.1f} s)", flush=True)
    ratio = compress("prune", str(path), "--ratio", "0.3", "--round-to", "8", "-o", str(work / f"{name}-{exporter}-r30"))
    if "error" in ratio:
        print(f"{tag} --ratio 0.3: refused: {ratio['error']}", flush=True)
    else:
        ok = compress("verify", str(work / f"{name}-{exporter}-r30")).get("ok")
        print(f"{tag} --ratio 0.3: params {ratio['params']['before']:,} -> {ratio['params']['after']:,}, "
              f"{parity_line(ratio)}, verify {'PASS' if ok else 'FAIL'}", flush=True)
    out = work / f"{name}-{exporter}-budget"
    budget = compress("prune", str(path), "--budget", str(args.budget), "--mode", "joint", "--store",
                      str(work / f"{name}-{exporter}.sqlite"), "-o", str(out), *(["--runs", str(args.runs)] if args.runs else []))
    if "error" in budget:
        print(f"{tag} --budget {args.budget}: refused: {budget['error']}", flush=True)
        return
    lat, ok = budget["latency"], compress("verify", str(out)).get("ok")
    met = lat["measured"] <= args.budget + lat["measured_se"]
    print(f"{tag} --budget {args.budget}: measured {lat['measured']:.3f} +- {lat['measured_se']:.3f} (met {met}, within 3% "
          f"below {met and lat['measured'] >= args.budget - 0.03}), predicted {lat['predicted']:.3f}, params "
          f"{budget['params']['before']:,} -> {budget['params']['after']:,}, blocks removed {len(budget['removed'])}, "
          f"{parity_line(budget)}, verify {'PASS' if ok else 'FAIL'} ({time.time() - t0:.0f} s)", flush=True)
    for row in lat.get("history", []):
        print(attempt_line(row), flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--exporters", default="legacy,dynamo")
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--runs", type=int, default=0, help="interleaved pairs per table entry (default: prune's)")
    ap.add_argument("--log", help="log file (default bench/results/onnx_plain.txt; '-' for none)")
    args = ap.parse_args(argv)
    with logged("onnx_plain", args.log), tempfile.TemporaryDirectory(prefix="onnx-plain-") as tmp:
        for name in args.models.split(","):
            for exporter in args.exporters.split(","):
                one_model(name, exporter, args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
