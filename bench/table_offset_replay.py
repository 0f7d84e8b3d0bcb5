"""Offline, no timing: how far a uniform offset in a latency table's entries moves plan predictions.

Reads the final plans of one method from an accuracy-bench JSONL (bench/accuracy_at_latency.py records
each row's `narrowed` groups, `removed` blocks and measured ratio) and predicts each plan with its seed's
table as stored by that run, with the same table's every entry divided by each --divide factor (what the
control entry, toolchain/latency/control.py, does when an unchanged copy of the model reads that factor),
and, where given, with a table of the same model profiled in another process (--other SEED=STORE).

    python bench/table_offset_replay.py --jsonl J --work W --method joint-taylor-lamp --seeds 0,1,2
        [--model pretrained:efficientnet_lite0] [--divide 0.98,0.967,0.95] [--other 1=S] [--log PATH|-]

W is the bench's --work folder: its per-seed baselines' ONNX and stores. Writes
bench/results/table_offset_replay.txt by default.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlog import logged  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model, model_sha256  # noqa: E402
from toolchain.latency.backends import get_backend  # noqa: E402
from toolchain.latency.config import ProfileConfig, resolve_round_to  # noqa: E402
from toolchain.latency.lut import read_table  # noqa: E402
from toolchain.latency.store import Store  # noqa: E402


def divided_copy(store: Path, factor: float, tmp: Path) -> Path:
    out = tmp / f"{store.stem}-{factor:g}.sqlite"
    shutil.copy(store, out)
    with sqlite3.connect(out) as db:
        db.execute("UPDATE measurements SET ratio = ratio / ?", (factor,))
    return out


def entries(store) -> dict:
    """A latency store's entries: (kind, item, k) -> ratio, as stored."""
    with sqlite3.connect(store) as db:
        return {r[:3]: r[3] for r in db.execute("SELECT kind, item, k, ratio FROM measurements")}


def median_offset(store: Path, other: Path) -> float:
    """Median of store's entries minus other's, over the entries both hold."""
    a, b = entries(store), entries(other)
    diffs = sorted(a[k] - b[k] for k in set(a) & set(b))
    return diffs[len(diffs) // 2] if diffs else float("nan")


def predict_all(store: Path, model, analysis, plans, device, config) -> list[float]:
    with Store(str(store)) as s:
        _, predictor = read_table(s, model_sha256(model), analysis, device, config)
    blocks = {b.id: b for b in analysis.blocks}
    return [predictor.predict(kept, [blocks[b] for b in removed]).corrected for kept, removed in plans]


def run(args, tmp: Path) -> None:
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.strip()]
    backend = get_backend("ort")
    device, config = backend.device(), resolve_round_to(ProfileConfig(points=4, runs=25), backend)
    others = dict(item.split("=", 1) for item in args.other)
    print(f"{args.method} plans of {args.model}, predicted by each seed's table; error = (measured - predicted) / measured")
    for seed in map(int, args.seeds.split(",")):
        tag = Path(args.work) / next(p.stem for p in Path(args.work).glob(f"{args.model.replace(':', '-')}-s{seed}-*.onnx"))
        model = load_model(str(tag) + ".onnx")
        analysis = analyze(model)
        mine = [r for r in rows if r["method"] == args.method and r["seed"] == seed and "narrowed" in r]
        plans = [({g: after for g, (after, _) in r["narrowed"].items()}, r["removed"]) for r in mine]
        measured = [r["measured_ratio"] for r in mine]
        stores = {"as stored": Path(str(tag) + ".sqlite")}
        stores.update({f"divided by {f}": divided_copy(stores["as stored"], float(f), tmp) for f in args.divide.split(",")})
        if str(seed) in others:
            other = Path(others[str(seed)])
            stores[f"other process (entries {median_offset(stores['as stored'], other):+.3f} from it, median)"] = other
        print(f"seed {seed}: budgets {[r['budget'] for r in mine]}, measured {[round(m, 3) for m in measured]}")
        for name, store in stores.items():
            predicted = predict_all(store, model, analysis, plans, device, config)
            errors = [100 * (m - p) / m for p, m in zip(predicted, measured)]
            print(f"  {name:48s} predicted {[round(p, 3) for p in predicted]}, error {[round(e, 1) for e in errors]} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jsonl", required=True)
    parser.add_argument("--work", required=True, help="the accuracy bench's --work folder")
    parser.add_argument("--method", default="joint-taylor-lamp")
    parser.add_argument("--model", default="pretrained:efficientnet_lite0")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--divide", default="0.98,0.967,0.95")
    parser.add_argument("--other", action="append", default=[], help="SEED=STORE: that seed's table profiled elsewhere")
    parser.add_argument("--log", default=None, help="log file (default bench/results/table_offset_replay.txt; - for none)")
    args = parser.parse_args()
    with logged("table_offset_replay", args.log), tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
