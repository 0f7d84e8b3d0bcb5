"""Replay the per-layer latency model of another commit against this one, offline, on measured plans.

Reads the plans that bench/accuracy_at_latency.py measured (its .jsonl rows: widths kept, blocks removed,
measured ratio) and, for each work folder's baselines (MODEL.onnx beside MODEL.sqlite, the table the plans
were solved on), predicts every plan of that model and seed with toolchain/latency/predict.py as it is at
--rev and as it is now. Prints, per table, whether the two fits differ and the prediction errors of each,
then the errors pooled over the tables where they differ. No timing: it only reads stores and logs.

    python bench/fit_replay.py --rev 28977b1 --work W1,W2 --jsonl R1.jsonl,R2.jsonl [--log PATH|-]

Writes bench/results/fit_replay.txt by default.
"""
import argparse
import glob
import importlib.util
import json
import sqlite3
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from benchlog import logged
from graphs.deps import analyze
from graphs.onnx_io import load_model, model_sha256
from toolchain.latency import predict as current
from toolchain.latency.device_profile import device_prior, device_where
from toolchain.latency.store import Store
from toolchain.latency.table import load_table


def module_at(rev: str):
    """toolchain/latency/predict.py as committed at `rev`, imported under another name."""
    source = subprocess.run(["git", "show", f"{rev}:toolchain/latency/predict.py"], check=True,
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / "predict_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("predict_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def measured_plans(paths: list[str]) -> dict[tuple[str, int], list[dict]]:
    """(model, seed) -> distinct measured plans of the 3-epoch baselines."""
    plans: dict[tuple[str, int], dict[str, dict]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            if isinstance(row.get("narrowed"), dict) and row.get("measured_ratio") and row["setting"].startswith("te3"):
                key = json.dumps([row["narrowed"], row["removed"], round(row["measured_ratio"], 4)], sort_keys=True)
                plans.setdefault((row["model"], row["seed"]), {})[key] = row
    return {k: list(v.values()) for k, v in plans.items()}


def tables(onnx_path: str, db: str, analysis):
    """Every table of this model in the store (one per backend/device/protocol)."""
    sha = model_sha256(analysis.model)
    with sqlite3.connect(db) as con:
        keys = con.execute("select distinct backend, device, precision, batch, runtime_version, protocol "
                           "from measurements where model_sha256=?", (sha,)).fetchall()
    for backend, device, precision, batch, runtime, protocol in keys:
        config = types.SimpleNamespace(backend=backend, precision=precision, batch=batch, protocol=protocol,
                                       anchors=(0.75, 0.5), depth_anchors=(0.5, 1.0), round_to=16)
        name, version = runtime.split(" ", 1)
        device_info = {"device": device, "runtime": name, "runtime_version": version}
        with Store(db) as store:
            table = load_table(store, sha, analysis, device_info, config)
            table.prior, table.prior_spread = device_prior(store, device_where(device_info, config), sha, analysis,
                                                           table.base_ms)
        yield protocol, table


def errors(predictor, analysis, plans: list[dict]) -> list[float]:
    blocks = {b.id: b for b in analysis.blocks}
    out = []
    for row in plans:
        kept = {g: int(v[0]) for g, v in row["narrowed"].items()}
        predicted = predictor.predict(kept, [blocks[b] for b in row["removed"]]).corrected
        out.append(abs(predicted - row["measured_ratio"]) / row["measured_ratio"])
    return out


def summary(errs: list[float]) -> str:
    return f"median {np.median(errs):.1%} mean {np.mean(errs):.1%} worst {max(errs):.1%}"


def run(args) -> None:
    before = module_at(args.rev)
    plans = measured_plans(args.jsonl.split(","))
    pooled = {"before": [], "now": []}
    for work in args.work.split(","):
        for db in sorted(glob.glob(f"{work}/*.sqlite")):
            onnx_path = db[:-len(".sqlite")] + ".onnx"
            stem = Path(db).stem  # e.g. builtin-resnet20-s2-te3-n10000-sNone
            spec, seed = stem.split("-s")[0].replace("-", ":", 1), int(stem.split("-s")[1].split("-")[0])
            mine = plans.get((spec, seed))
            if not mine or not Path(onnx_path).exists():
                continue
            analysis = analyze(load_model(onnx_path))
            for protocol, table in tables(onnx_path, db, analysis):
                old = before.Predictor(table, analysis, analysis.blocks)
                new = current.Predictor(table, analysis, analysis.blocks)
                e_old, e_new = errors(old, analysis, mine), errors(new, analysis, mine)
                differs = not np.allclose(old.efficiency, new.efficiency)
                if differs:
                    pooled["before"] += e_old
                    pooled["now"] += e_new
                print(f"{spec} seed {seed} ({protocol}): fits differ: {differs}; per-op {old.efficiency[-1]:.2f} -> "
                      f"{new.efficiency[-1]:.2f}; {len(mine)} plans; at {args.rev}: {summary(e_old)}; now: {summary(e_new)}")
    if pooled["now"]:
        print(f"pooled where the fits differ ({len(pooled['now'])} plans): at {args.rev}: {summary(pooled['before'])}; "
              f"now: {summary(pooled['now'])}")
    else:
        print("the two fits agree on every table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", required=True, help="the commit whose predict.py to compare against")
    parser.add_argument("--work", required=True, help="comma-separated work folders of accuracy_at_latency.py")
    parser.add_argument("--jsonl", required=True, help="comma-separated .jsonl results holding the measured plans")
    parser.add_argument("--log", default=None, help="log path (default bench/results/fit_replay.txt; - for none)")
    args = parser.parse_args()
    with logged("fit_replay", args.log):
        run(args)


if __name__ == "__main__":
    main()
