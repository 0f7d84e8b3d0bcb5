"""Sweep: export, analyze, prune and verify every torchvision classification model.

For each model torchvision can build (`torchvision.models.list_models(module=torchvision.models)`),
weights=None, input 1x3x224x224: export to ONNX, analyze, prune 30% of every prunable group
(round_to 8) and remove the middle removable block where there is one, then verify parity of the
synced torch module against the pruned ONNX.

Each model runs in its own subprocess with a timeout, so a hang or a crash is recorded and the sweep
goes on. Rows are appended to a JSONL file as they come; models already in it are skipped (resume)
unless --fresh.

    python bench/sweep_torchvision.py [--out FILE.jsonl] [--models a,b] [--max-params 150]
                                      [--timeout 300] [--jobs 1] [--fresh] [--table-only] [--md FILE.md]

Status: `ok` (parity within tolerance on a well-scaled output), `parity-fail` (outside tolerance, or
an output scale still degenerate after BatchNorm recalibration), `error: <first line>` (an exception,
a timeout or a crash, with the stage it happened in).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "bench" / "results" / "sweep_torchvision.jsonl"
INPUT_SHAPE = (1, 3, 224, 224)
RATIO = 0.3
ROUND_TO = 8
ROW_MARK = "@@SWEEP_ROW@@ "
# Not convolutional networks (attention blocks); everything else torchvision lists is a CNN.
TRANSFORMER_PREFIXES = ("vit_", "swin_", "maxvit")


def is_cnn(name: str) -> bool:
    return not name.startswith(TRANSFORMER_PREFIXES)


def first_line(e: BaseException | str) -> str:
    text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else str(text))[:300]


def all_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def param_millions(name: str) -> float | None:
    """Parameter count (millions) without building the model: the weights' metadata, else the meta device."""
    import torchvision

    try:
        weights = list(torchvision.models.get_model_weights(name))
        if weights:
            return weights[0].meta["num_params"] / 1e6
    except Exception:  # noqa: BLE001 -- fall back to counting
        pass
    try:
        import torch

        with torch.device("meta"):
            m = torchvision.models.get_model(name, weights=None)
        return sum(p.numel() for p in m.parameters()) / 1e6
    except Exception:  # noqa: BLE001
        return None


def run_model(name: str, workdir: str | Path | None = None, input_shape=INPUT_SHAPE,
              ratio: float = RATIO, round_to: int = ROUND_TO) -> dict:
    """Export, analyze, prune and verify one torchvision model in this process; return the result row.

    Never raises: an exception becomes `status = "error: <first line>"` with the stage it came from."""
    import warnings

    warnings.filterwarnings("ignore")
    row: dict = {"model": name, "input_shape": list(input_shape), "ratio": ratio, "round_to": round_to,
                 "params_m": None, "groups": None, "prunable": None, "blocks": None, "removed_block": None,
                 "max_diff": None, "scale": None, "tolerance": None, "recalibrated": None,
                 "degenerate": None, "params_after_m": None, "macs_ratio": None, "stage": None,
                 "status": None, "error": None, "traceback": None}
    t0 = time.time()
    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix=f"sweep-{name}-")) if own_tmp else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    stage = "import"
    try:
        from graphs.deps import analyze
        from graphs.onnx_io import load_model
        from toolchain.export import export_spec
        from toolchain.prune import prune_to_dir, uniform_plan
        from toolchain.verify import verify_dir

        spec = f"torchvision:{name}"
        onnx_path = work / f"{name}.onnx"
        out_dir = work / f"{name}-pruned"
        stage = "export"
        export_spec(spec, onnx_path, input_shape=input_shape)
        stage = "analyze"
        analysis = analyze(load_model(onnx_path))
        row["params_m"] = _params_m(analysis.model)
        row["groups"] = len(analysis.groups)
        row["prunable"] = sum(1 for g in analysis.groups if g.prunable)
        stage = "blocks"
        blocks = analysis.blocks
        row["blocks"] = len(blocks)
        stage = "plan"
        plan = uniform_plan(analysis, ratio, round_to)
        plan.remove = [blocks[len(blocks) // 2].id] if blocks else []
        row["removed_block"] = plan.remove[0] if plan.remove else None
        stage = "prune"
        summary = prune_to_dir(str(onnx_path), str(out_dir), plan)
        row["params_after_m"] = summary["params"]["after"] / 1e6
        if summary["macs"]["before"]:
            row["macs_ratio"] = summary["macs"]["after"] / summary["macs"]["before"]
        stage = "verify"
        result = verify_dir(out_dir)
        p = result.parity
        row.update(max_diff=float(p.max_diff), scale=float(p.scale), tolerance=float(p.tolerance),
                   recalibrated=bool(result.recalibrated), degenerate=bool(p.degenerate))
        stage = None
        if p.ok and not p.degenerate:
            row["status"] = "ok"
        elif p.ok:  # within tolerance, but on an output scale that proves nothing (DESIGN.md)
            row["status"] = "parity-fail"
            row["error"] = f"degenerate output scale {p.scale:.3g} even after BatchNorm recalibration"
        else:
            row["status"] = "parity-fail"
            row["error"] = f"max |diff| {p.max_diff:.3g} > tolerance {p.tolerance:.3g}"
    except BaseException as e:  # noqa: BLE001 -- every failure is a row, not a crash of the sweep
        if isinstance(e, KeyboardInterrupt):
            raise
        row["status"] = f"error: {first_line(e)}"
        row["error"] = first_line(e)
        row["traceback"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
    finally:
        row["stage"] = stage
        row["seconds"] = round(time.time() - t0, 1)
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return row


def _params_m(model) -> float:
    import numpy as np

    return float(sum(int(np.prod(t.dims)) for t in model.graph.initializer)) / 1e6


# ---- the sweep: one subprocess per model ---------------------------------------------------------

def run_isolated(name: str, timeout: float, threads: int | None = None) -> dict:
    """run_model(name) in a fresh interpreter; a timeout or a crash is an error row."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"sweep-{name}-") as work:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--workdir", work]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
        except subprocess.TimeoutExpired:
            return {"model": name, "status": f"error: timeout after {timeout:g} s", "stage": "timeout",
                    "error": f"timeout after {timeout:g} s", "seconds": round(time.time() - t0, 1)}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(ROW_MARK):
            return json.loads(line[len(ROW_MARK):])
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    msg = f"crashed ({how})" + (f": {tail[-1].strip()[:200]}" if tail else "")
    return {"model": name, "status": f"error: {msg}", "stage": "crash", "error": msg,
            "stderr_tail": "\n".join(tail[-20:]), "seconds": round(time.time() - t0, 1)}


def read_rows(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill: that model runs again
                rows[row["model"]] = row
    return rows


def select_models(models: str | None, max_params: float | None) -> tuple[list[str], dict[str, float | None], list[str]]:
    names = all_models()
    if models:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in names]
        if unknown:
            raise SystemExit(f"not a torchvision classification model: {', '.join(unknown)}")
        names = wanted
    sizes = {n: param_millions(n) for n in names}
    skipped = [n for n in names if max_params is not None and sizes[n] is not None and sizes[n] > max_params]
    return [n for n in names if n not in skipped], sizes, skipped


def sweep(names: list[str], out: Path, timeout: float, jobs: int, sizes: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_rows(out)
    todo = [n for n in names if n not in done]
    todo.sort(key=lambda n: sizes.get(n) or 0.0)  # small models first: a partial sweep covers the most
    lock = threading.Lock()
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if jobs > 1 else None

    def one(name: str) -> None:
        row = run_isolated(name, timeout, threads)
        row.setdefault("params_m", sizes.get(name))
        with lock:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {row['status']} ({row.get('seconds')} s)", flush=True)

    print(f"{len(todo)} to run, {len(names) - len(todo)} already in {out}", flush=True)
    if jobs <= 1:
        for n in todo:
            one(n)
    else:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, todo))


def _fmt(v, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def table(rows: list[dict], header: str | None = None) -> str:
    rows = sorted(rows, key=lambda r: r["model"])
    lines = []
    if header:
        lines += [header, ""]
    lines += ["| model | params M | groups | prunable | blocks | removed block | parity max-diff | scale | status |",
              "|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        status = r["status"].replace("|", "\\|")
        if r["status"] == "parity-fail" and r.get("error"):
            status += f" ({r['error']})"
        if r["status"].startswith("error") and r.get("stage") not in (None, "timeout", "crash"):
            status += f" [{r['stage']}]"
        lines.append(f"| {r['model']} | {_fmt(r.get('params_m'), '.1f')} | {_fmt(r.get('groups'))} | "
                     f"{_fmt(r.get('prunable'))} | {_fmt(r.get('blocks'))} | {_fmt(r.get('removed_block'))} | "
                     f"{_fmt(r.get('max_diff'), '.2e')} | {_fmt(r.get('scale'), '.3g')} | {status} |")
    ok = sum(1 for r in rows if r["status"] == "ok")
    lines += ["", f"{ok} of {len(rows)} models pruned with parity"]
    return "\n".join(lines)


def success_count(rows: list[dict]) -> int:
    return sum(1 for r in rows if r["status"] == "ok")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL results file (appended, resumable)")
    ap.add_argument("--models", help="comma-separated model names (default: all)")
    ap.add_argument("--max-params", type=float, default=150.0,
                    help="skip models over this many million parameters (default 150; 0 = no limit)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per model (default 300)")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once (default 1)")
    ap.add_argument("--fresh", action="store_true", help="start a new results file")
    ap.add_argument("--table-only", action="store_true", help="print the table from the JSONL and exit")
    ap.add_argument("--md", type=Path, help="also write the table to this Markdown file")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:  # child process: one model, the row on stdout
        row = run_model(args.one, args.workdir)
        print(ROW_MARK + json.dumps(row), flush=True)
        return 0

    max_params = args.max_params or None
    if args.table_only:
        rows = read_rows(args.out)
        if args.models:
            wanted = {m.strip() for m in args.models.split(",")}
            rows = {k: v for k, v in rows.items() if k in wanted}
        header = None
    else:
        names, sizes, skipped = select_models(args.models, max_params)
        if skipped:
            print(f"skipped (> {max_params:g}M parameters): {', '.join(skipped)}", flush=True)
        if args.fresh and args.out.exists():
            args.out.unlink()
        sweep(names, args.out, args.timeout, args.jobs, sizes)
        rows = {k: v for k, v in read_rows(args.out).items() if k in set(names)}
        header = None
    text = table(list(rows.values()), header)
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
