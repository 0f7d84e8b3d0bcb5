"""How well do the latency tables predict real pruned models, and at what measurement cost? (ORT CPU, batch 1)

For each model, three tables side by side (--tables):
  full     the whole grid (every group at --points widths, every block, the anchors);
  reduced  the anchors, then actively selected entries (toolchain/latency/active.py) until the
           predicted error bound or --max-measurements, with the device profile of the OTHER models
           as the per-layer model's prior (a fresh store per model: nothing of its own is reused);
  prior    the anchors only, the rest from that device profile.
Then random Plans (mixed widths on the round_to grid and 0-2 removed blocks) are built and measured
interleaved with the unpruned model, once, and every table predicts them: measurement count, wall
time and the per-layer model's median/worst error per table (the full table's additive SP-LAMP
error too). --prior-models are profiled (full grid) first, only to feed the device profile.
--repeats N does it all N times (fresh reduced/prior tables, new plans) in one log. --keep-tables DIR
keeps each run's reduced/prior stores, so a run that misses can be examined from the entries it
measured (profiling a kept store again with the same mode selects the same entries and measures
none). "mean signed" is a table's bias: negative predicts the plans faster than they measured.

    python bench/lut_accuracy.py [--models torchvision:resnet18,torchvision:resnet50] [--plans 20]
                                 [--prior-models M,...] [--tables full,reduced,prior] [--repeats 2]
                                 [--store lut.sqlite] [--log PATH|-]
Without --store the full tables are measured in the run (a fresh temporary store); --store keeps
them for bench/budget.py and bench/vs_uniform.py, or reuses what is there (the log's first line
says; a reused table's wall time is read from its entries' timestamps and marked so).
Writes bench/results/lut_accuracy.txt.
Goals (issue 15): resnet50 reduced <= 32 measurements, resnet18 <= 12, median <= 3%, worst <= 8%;
a model never profiled, prior + a few entries: <= 8 measurements, median <= 5%, worst <= 10%.
"""
import argparse
import json
import sqlite3
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model, model_sha256  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.backends import get_backend  # noqa: E402
from toolchain.latency.config import ProfileConfig, resolve_round_to  # noqa: E402
from toolchain.latency.lut import profile  # noqa: E402
from toolchain.latency.measure import interleaved_ratio  # noqa: E402
from toolchain.latency.device_profile import device_where  # noqa: E402
from toolchain.latency.predict import Predictor  # noqa: E402
from toolchain.latency.store import Store  # noqa: E402
from toolchain.solve.budget import width_options  # noqa: E402
from benchlog import logged, store_line  # noqa: E402


def random_plan(rng, analysis, blocks, round_to):
    kept = {}
    for g in analysis.groups:
        if g.prunable and rng.random() < 0.6:
            options = width_options(g, round_to)
            kept[g.id] = int(rng.choice(options))
    removed = []
    for b in rng.permutation(blocks)[: rng.integers(0, 3)]:
        if not any(set(b.nodes) & set(r.nodes) for r in removed):
            removed.append(b)
    return kept, removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="torchvision:resnet18,torchvision:resnet50")
    parser.add_argument("--prior-models", default="", help="profiled (full grid) first, for the device profile only")
    parser.add_argument("--tables", default="full,reduced,prior", help="which tables to compare")
    parser.add_argument("--repeats", type=int, default=2, help="runs of the reduced/prior tables and plans, all logged")
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20, help="interleaved pairs per table entry")
    parser.add_argument("--measure-runs", type=int, default=60, help="interleaved pairs per plan measurement")
    parser.add_argument("--points", type=int, default=3)
    parser.add_argument("--max-measurements", type=int, default=None, help="cap of the reduced table (anchors included; default a quarter of the full grid)")
    parser.add_argument("--target-error", type=float, default=0.05, help="the reduced table's predicted error bound")
    parser.add_argument("--round-to", type=int, default=None,
                        help="table grid and plan widths (default: the backend's channel block, 16 on AVX-512)")
    parser.add_argument("--store", default=None, help="the full tables' store (default: a fresh temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-tables", default=None, metavar="DIR",
                        help="keep each run's reduced/prior table stores here to examine later, not in a temporary folder")
    parser.add_argument("--out", default=None, help="also write every plan, measured and predicted, to this JSON file")
    parser.add_argument("--log", default=None, help="log file (default bench/results/lut_accuracy.txt; - for none)")
    args = parser.parse_args()
    with logged("lut_accuracy", args.log):
        run(args)


def _rows_of(store: str, sha: str) -> tuple[int, float]:
    """This model's measurement count in a store and the span of their timestamps (s)."""
    with sqlite3.connect(store) as db:
        count, first, last = db.execute("SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM measurements "
                                        "WHERE model_sha256 = ?", (sha,)).fetchone()
    return count, (last - first) if count else 0.0


def _timed_table(path, store, config, sha) -> tuple[object, int, float, str]:
    """Profile into `store`; (table, this model's measurements, wall s, note on where the time is from)."""
    before, _ = _rows_of(store, sha) if Path(store).exists() else (0, 0.0)
    t0 = time.perf_counter()
    table = profile(str(path), store, config)
    wall = time.perf_counter() - t0
    count, span = _rows_of(store, sha)
    if before and before == count:
        return table, count, span, "reused: the entries' timestamp span"
    return table, count, wall, "" if not before else f"{before} entries reused"


def seed_profile(full_store: str, store: str, where: dict, sha: str) -> int:
    """Copy the device profile of every model but `sha` into a fresh store: the table then starts from
    what the device knows of other models only."""
    with Store(full_store) as src:
        rows = src.profile_rows(where, exclude_model=sha)
    by_model: dict[str, dict] = {}
    for r in rows:
        by_model.setdefault(r["model_sha256"], {})[r["op_class"]] = (r["ms_per_unit"], r["units"], r["entries"])
    with Store(store) as dst:
        for model_sha, classes in by_model.items():
            dst.put_profile(where, model_sha, classes)
    return len(by_model)


def export_model(spec, tmp):
    path = Path(tmp) / (spec.replace(":", "_") + ".onnx")
    if not path.exists():
        export_spec(spec, str(path))
    return path


def run(args) -> None:
    print(store_line(args.store))
    tables = args.tables.split(",")
    summary = []
    if args.out:
        Path(args.out).unlink(missing_ok=True)  # this run's plans only
    with tempfile.TemporaryDirectory() as tmp:
        full_store = args.store or str(Path(tmp) / "lut.sqlite")
        base = resolve_round_to(ProfileConfig(round_to=args.round_to, points=args.points, runs=args.runs))
        backend = get_backend(base.backend, **base.backend_options())
        where = device_where(backend.device(), base)
        for spec in filter(None, args.prior_models.split(",")):
            path = export_model(spec, tmp)
            _, count, wall, note = _timed_table(path, full_store, base, model_sha256(load_model(path)))
            print(f"{spec}: full table for the device profile, {count} measurements, {wall:.0f} s {note}")
        fulls = {}  # every full table before any reduced one: each repeat sees one device profile
        if "full" in tables:
            for spec in args.models.split(","):
                path = export_model(spec, tmp)
                fulls[spec] = _timed_table(path, full_store, base, model_sha256(load_model(path)))
        for repeat in range(args.repeats):
            rng = np.random.default_rng(args.seed + repeat)
            for spec in args.models.split(","):
                summary += evaluate(args, spec, tables, repeat, rng, tmp, full_store, base, backend, where, fulls)
        print("\nside by side (per-layer model's error on the random plans, measured each run):")
        for line in summary:
            print(line)


def evaluate(args, spec, tables, repeat, rng, tmp, full_store, base, backend, where, fulls) -> list[str]:
    """One model, one repeat: the reduced/prior tables in fresh stores, the plans measured once and
    predicted by every table. Returns its side-by-side lines."""
    path = export_model(spec, tmp)
    model = load_model(path)
    sha = model_sha256(model)
    analysis = analyze(model)
    blocks = analysis.blocks
    built = {}
    if "full" in tables:
        built["full"] = fulls[spec]
    for mode in (t for t in tables if t != "full"):
        store = Path(args.keep_tables or tmp) / f"{mode}-{repeat + 1}-{path.stem}.sqlite"
        store.parent.mkdir(parents=True, exist_ok=True)
        store.unlink(missing_ok=True)  # a kept store from an earlier run must not be reused: this run measures
        store = str(store)
        models = seed_profile(full_store, store, where, sha)
        config = replace(base, table=mode, max_measurements=args.max_measurements, target_error=args.target_error)
        built[mode] = _timed_table(path, store, config, sha)
        print(f"{spec} run {repeat + 1}: {mode} table from a device profile of {models} other model(s): "
              f"{built[mode][1]} measurements in {built[mode][2]:.0f} s")
    predictors = {mode: Predictor(t[0], analysis, blocks) for mode, t in built.items()}
    reference = backend.prepare(model.SerializeToString())
    measured, guesses, additive = [], {mode: [] for mode in built}, []
    for i in range(args.plans):
        kept, removed = random_plan(rng, analysis, blocks, base.round_to)
        plan = Plan(channels={g: {"count": k} for g, k in kept.items()}, remove=[b.id for b in removed])
        pruned, _ = apply_plan(model, plan, analysis=analysis, check=False)
        candidate = backend.prepare(pruned.SerializeToString())
        measured.append(interleaved_ratio(candidate, reference, warmup=base.warmup, runs=args.measure_runs,
                                          pause_s=base.pause_s).ratio)
        candidate.close()
        for mode, predictor in predictors.items():
            guess = predictor.predict(kept, removed)
            guesses[mode].append(guess.corrected)
            if mode == "full":
                additive.append(guess.additive)
        print(f"{spec} run {repeat + 1} plan {i:2d}: {len(kept):2d} groups narrowed, {len(removed)} blocks removed: "
              f"measured {measured[-1]:.3f}, " + ", ".join(f"{m} {g[-1]:.3f}" for m, g in guesses.items()))
    reference.close()
    m = np.array(measured)
    lines = []
    for mode, (table, count, wall, note) in built.items():
        signed = (np.array(guesses[mode]) - m) / m
        err = np.abs(signed)
        lines.append(f"{spec} run {repeat + 1} {mode:8s}: {count:3d} measurements, {wall:5.0f} s"
                     f"{' (' + note + ')' if note else ''}; error median {np.median(err):.1%} worst {err.max():.1%}"
                     f" mean signed {signed.mean():+.1%}")
    if additive:
        err = np.abs(np.array(additive) - m) / m
        lines.append(f"{spec} run {repeat + 1} full, SP-LAMP additive: error median {np.median(err):.1%} "
                     f"worst {err.max():.1%}")
    print("\n".join(lines) + f"\n({args.plans} plans, measured ratios {m.min():.2f}-{m.max():.2f})\n")
    if args.out:
        out = Path(args.out)
        results = json.loads(out.read_text()) if out.exists() else {}
        results[f"{spec} run {repeat + 1}"] = {"measured": measured, "predicted": guesses,
                                               "tables": {k: v[1:3] for k, v in built.items()}}
        out.write_text(json.dumps(results, indent=1))
    return lines


if __name__ == "__main__":
    main()
