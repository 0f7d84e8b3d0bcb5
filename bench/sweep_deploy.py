"""Sweep: the models people deploy, exported, pruned 30% (round_to 8) and verified.

ultralytics yolov8n, yolov8n-seg, yolo11n, yolo11n-seg (random weights from the packaged YAML, 320x320),
torchvision lraspp / deeplabv3_mobilenet / fcn_resnet50 (224x224), and the detectors
ssdlite320_mobilenet_v3_large and retinanet_resnet50_fpn at 320x320 as backbone + FPN + head (their
raw box and class maps: the anchor decoding and NMS after them hold no weights and do not trace to a
static graph). Each row: prunable groups, removable blocks, the middle block removed along with the
30% channel cut, and verify's parity of the synced torch module against the pruned ONNX.

    nice -n 10 python bench/sweep_deploy.py [--models yolov8n,lraspp] [--out bench/results/sweep_deploy.jsonl]

Writes the JSONL (one row per model) and a Markdown table beside it (.md), each headed by the date,
commit and command. Needs the optional extra: pip install -e .[yolo].
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THIS = Path(__file__).resolve()
MODELS = {
    "yolov8n": ("ultralytics:yolov8n.yaml", 320),
    "yolov8n-seg": ("ultralytics:yolov8n-seg.yaml", 320),
    "yolo11n": ("ultralytics:yolo11n.yaml", 320),
    "yolo11n-seg": ("ultralytics:yolo11n-seg.yaml", 320),
    "lraspp_mobilenet_v3_large": ("torchvision:lraspp_mobilenet_v3_large", 224),
    "deeplabv3_mobilenet_v3_large": ("torchvision:deeplabv3_mobilenet_v3_large", 224),
    "fcn_resnet50": ("torchvision:fcn_resnet50", 224),
    "ssdlite320_mobilenet_v3_large": (f"{THIS}:ssdlite_core", 320),
    "retinanet_resnet50_fpn": (f"{THIS}:retinanet_core", 320),
}


class DetectorCore(nn.Module):
    """A torchvision detector's backbone (+ FPN) and head; parameter names stay the detector's own."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head

    def forward(self, x):
        return self.head(list(self.backbone(x).values()))


def ssdlite_core() -> nn.Module:
    from toolchain.zoo import build_model

    return DetectorCore(build_model("torchvision:ssdlite320_mobilenet_v3_large"))


def retinanet_core() -> nn.Module:
    from toolchain.zoo import build_model

    return DetectorCore(build_model("torchvision:retinanet_resnet50_fpn"))


def run_model(name: str, work: Path) -> dict:
    """Export, analyze, prune and verify one model; an exception becomes the row's error."""
    from graphs.blocks import removable_blocks
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from toolchain.export import export_spec
    from toolchain.prune import prune_to_dir, uniform_plan
    from toolchain.verify import verify_dir

    spec, size = MODELS[name]
    row = {"model": name, "spec": spec.replace(str(THIS), "bench/sweep_deploy.py"), "input": size}
    t0, stage = time.time(), "export"
    try:
        onnx_path = work / f"{name}.onnx"
        export_spec(spec, onnx_path, input_shape=(1, 3, size, size))
        stage = "analyze"
        analysis = analyze(load_model(onnx_path))
        blocks = removable_blocks(analysis.model, analysis.shapes)
        row.update(groups=len(analysis.groups), prunable=sum(g.prunable for g in analysis.groups), blocks=len(blocks))
        plan = uniform_plan(analysis, 0.3, 8)
        plan.remove = [blocks[len(blocks) // 2].id] if blocks else []
        row["removed_block"] = plan.remove[0] if plan.remove else None
        stage = "prune"
        summary = prune_to_dir(str(onnx_path), str(work / f"{name}-pruned"), plan)
        row["params_m"] = [round(summary["params"]["before"] / 1e6, 3), round(summary["params"]["after"] / 1e6, 3)]
        stage = "verify"
        p = verify_dir(work / f"{name}-pruned").parity
        row.update(max_diff=p.max_diff, tolerance=p.tolerance, scale=p.scale,
                   status="ok" if p.ok and not p.degenerate else "parity-fail")
    except Exception as exc:  # noqa: BLE001 -- recorded, the sweep goes on
        row.update(status=f"error in {stage}", error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}",
                   traceback=traceback.format_exc(limit=3))
    row["seconds"] = round(time.time() - t0, 1)
    return row


def header(argv: list[str]) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "command": " ".join(["python", "bench/sweep_deploy.py", *argv]), "torch": torch.__version__,
            "load_start": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | input | prunable groups | removable blocks | removed | params M before -> after | max diff | tolerance | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['params_m'][0]} -> {r['params_m'][1]}" if r.get("params_m") else ""
        diff = f"{r['max_diff']:.3g}" if r.get("max_diff") is not None else ""
        tol = f"{r['tolerance']:.3g}" if r.get("tolerance") is not None else ""
        status = r["status"] + (f": {r['error']}" if r.get("error") else "")
        lines.append(f"| {r['model']} | {r['input']} | {r.get('prunable', '')}/{r.get('groups', '')} | {r.get('blocks', '')} "
                     f"| {r.get('removed_block') or ''} | {params} | {diff} | {tol} | {status} |")
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep_deploy.jsonl")
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s): {', '.join(unknown)}")
    head, rows = header(argv), []
    with tempfile.TemporaryDirectory(prefix="sweep-deploy-") as tmp:
        for name in names:
            rows.append(run_model(name, Path(tmp)))
            r = rows[-1]
            print(f"{name}: {r['status']} groups {r.get('prunable')}/{r.get('groups')} blocks {r.get('blocks')} "
                  f"diff {r.get('max_diff')} ({r['seconds']} s)" + (f" {r['error']}" if r.get("error") else ""), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps({**head, **r}) + "\n" for r in rows))
    head["load_end"] = [round(x, 2) for x in os.getloadavg()]
    md = [f"# sweep_deploy: {head['date']}, commit {head['commit']}", "", f"`{head['command']}` (torch {head['torch']})", "",
          f"Load average (1, 5, 15 min) on {head['cpus']} CPUs: {head['load_start']} at the start, {head['load_end']} "
          "at the end (the sweep measures parity, not latency).", "",
          *table(rows), "", f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} models pruned 30% and verified", ""]
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(table(rows)))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
