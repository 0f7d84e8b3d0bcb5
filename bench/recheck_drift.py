"""Does re-timing an old table's anchors bring its predictions back to today's host? (recheck.py)

For an exported model and a store that holds its latency table from an earlier session, this solves
joint (sp-lamp) plans at a few targets with the table as stored, measures each pruned model
interleaved with the unpruned one, then re-times the table's anchors (what `--recheck-after` does to
an old table) and predicts the same plans again. With --fresh it also profiles the model's whole
table afresh in a scratch store and predicts them a third way. It works on a copy of the store: the
re-timed anchors never replace the original rows.

    python bench/recheck_drift.py --model M.onnx --store S.sqlite [--targets 0.7,0.5,0.35]
        [--runs 25 --points 4 --round-to 8]  (the settings the table was profiled with: the key)
        [--fresh] [--measure-runs 60] [--log PATH|-]

The README's run: the ResNet-56 tables that bench/accuracy_at_latency.py profiled in its work folder.
Writes bench/results/recheck_drift.txt (date, commit, command line on top).
"""
import argparse
import shutil
import sqlite3
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

warnings.filterwarnings("ignore")

from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from toolchain.criteria import filter_scores  # noqa: E402
from toolchain.latency.config import ProfileConfig, resolve_round_to  # noqa: E402
from toolchain.latency.lut import profile  # noqa: E402
from toolchain.latency.predict import Predictor  # noqa: E402
from toolchain.prune import prune_to_dir  # noqa: E402
from toolchain.refine import measure_against  # noqa: E402
from toolchain.solve.budget import solve_joint  # noqa: E402
from toolchain.torch_source import torch_module_for  # noqa: E402
from benchlog import logged  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an ONNX from `compress export` (its torch spec scores it)")
    parser.add_argument("--store", required=True, help="the store holding its table (copied, never written)")
    parser.add_argument("--targets", default="0.7,0.5,0.35")
    parser.add_argument("--runs", type=int, default=25, help="the table's --runs (part of its key)")
    parser.add_argument("--points", type=int, default=4, help="the table's --points")
    parser.add_argument("--round-to", type=int, default=None, help="the table's --round-to (default: the block)")
    parser.add_argument("--measure-runs", type=int, default=60)
    parser.add_argument("--fresh", action="store_true", help="also profile a whole fresh table to compare with")
    parser.add_argument("--log", default=None, help="log file (default bench/results/recheck_drift.txt; - for none)")
    args = parser.parse_args()
    with logged("recheck_drift", args.log):
        run(args)


def rows(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]


def run(args) -> None:
    config = resolve_round_to(ProfileConfig(runs=args.runs, points=args.points, round_to=args.round_to,
                                            recheck_after_s=None))
    model = load_model(args.model)
    analysis = analyze(model)
    module = torch_module_for(model)[0]
    scores = filter_scores("sp-lamp", module, analysis)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "copy.sqlite"
        shutil.copy(args.store, store)
        held = rows(store)
        stored = profile(args.model, str(store), config)
        if rows(store) != held:
            sys.exit(f"error: {args.store} does not hold this model's whole table with --runs {args.runs} --points "
                     f"{args.points} --round-to {config.round_to}: {rows(store) - held} entries had to be measured")
        with sqlite3.connect(store) as db:
            age = db.execute("SELECT (julianday('now') - julianday(MAX(created_at), 'unixepoch')) * 24 FROM "
                             "measurements WHERE kind = 'anchor'").fetchone()[0]
        print(f"{args.model}: table of {stored.measured} entries, anchors stored {age:.1f} h ago, "
              f"round_to {config.round_to}; joint sp-lamp plans, each measured with {args.measure_runs} interleaved pairs")
        plans = []
        for target in [float(t) for t in args.targets.split(",")]:
            decision = solve_joint(analysis, stored, analysis.blocks, scores, target, config.round_to, "sp-lamp")
            out = Path(tmp) / f"plan-{target}"
            prune_to_dir(args.model, str(out), decision.plan, analysis=analysis)  # its own module: pruning edits one
            measured = measure_against(args.model, str(out), config, args.measure_runs)
            plans.append((target, decision, measured["ratio"], measured["ratio_se"]))
        rechecked = profile(args.model, str(store), replace(config, recheck_after_s=0.0))
        for d in rechecked.drifts:
            print(f"  anchor {d.item}: stored {d.stored:.3f}, re-timed {d.now:.3f} ({d.change:+.1%})")
        tables = {"as stored": stored, "anchors re-timed": rechecked}
        if args.fresh:
            tables["fresh table"] = profile(args.model, str(Path(tmp) / "fresh.sqlite"), config)
        report(plans, {name: Predictor(t, analysis, analysis.blocks) for name, t in tables.items()})


def report(plans, predictors: dict) -> None:
    print("| target | measured | " + " | ".join(f"{name}: predicted (error)" for name in predictors) + " |")
    print("|---|---|" + "---|" * len(predictors))
    errors = {name: [] for name in predictors}
    for target, decision, measured, se in plans:
        cells = []
        for name, predictor in predictors.items():
            predicted = predictor.predict(decision.kept, decision.removed).corrected
            errors[name].append(abs(predicted / measured - 1))
            cells.append(f"{predicted:.3f} ({predicted / measured - 1:+.1%})")
        print(f"| {target:.2f} | {measured:.3f} +- {se:.3f} | " + " | ".join(cells) + " |")
    print("mean |error|: " + ", ".join(f"{name} {sum(e) / len(e):.1%}" for name, e in errors.items()))


if __name__ == "__main__":
    main()
