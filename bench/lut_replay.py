"""Replay a bench/lut_accuracy.py log offline: its plans against tables rebuilt from a store, no timing.

lut_accuracy.py draws its random plans from `--seed` (run r uses seed + r - 1) and logs every plan's
measured ratio. This redraws the same plans, reads those measured ratios back from the log, and
predicts them with tables built from a store's full grid:
  full     the store's full table, as lut_accuracy.py's own `full` row;
  reduced  the reduced selection (toolchain/latency/lut.py) re-run in a fresh store seeded with the
           other models' device profile, each chosen entry taken from the full grid's measurement
           of it instead of timed again (--inject S adds Gaussian noise of S to those entries);
  prior    the anchors only, likewise.
Selection depends only on which entries are measured, not on their values, so `reduced` picks the
entries the live run picked. Comparing its error with the live run's separates what the selection
costs from what timing drift between a table and the plans costs. It also prints what sets the full
table's width level: each width anchor's measured/predicted saving, and the scale the plans needed.

    python bench/lut_replay.py LOG --model torchvision:resnet18 --store S [--seed 1]
                               [--max-measurements 12] [--inject 0.01] [--log PATH|-]

The store must hold the model's full table (the one lut_accuracy.py used) and the other models' device
profile rows. Writes bench/results/lut_replay.txt by default.
"""
import argparse
import re
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

import lut_accuracy  # noqa: E402
from benchlog import logged  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model, model_sha256  # noqa: E402
from toolchain.latency import lut  # noqa: E402
from toolchain.latency.backends import get_backend  # noqa: E402
from toolchain.latency.config import ProfileConfig, resolve_round_to  # noqa: E402
from toolchain.latency.device_profile import device_where  # noqa: E402
from toolchain.latency.predict import Predictor  # noqa: E402
from toolchain.latency.store import VALUES, Store  # noqa: E402

PLAN_LINE = re.compile(r".* run (\d+) plan +\d+:\s+(\d+) groups narrowed, (\d+) blocks removed: measured ([0-9.]+)")


def measured_plans(log: str) -> dict[int, list[tuple[int, int, float]]]:
    """run -> [(groups narrowed, blocks removed, measured ratio)] in the log's order."""
    runs: dict[int, list] = {}
    for line in Path(log).read_text().splitlines():
        m = PLAN_LINE.match(line)
        if m:
            runs.setdefault(int(m[1]), []).append((int(m[2]), int(m[3]), float(m[4])))
    return runs


def replay_from(oracle: Store, sha: str, device: dict, inject: float, rng) -> None:
    """Make lut.py take every entry from `oracle` instead of timing it (noise added to single entries):
    the candidate itself stands in for the pruned model, and "measuring" it reads the oracle's row."""

    def from_oracle(backend, reference, candidate, config, precise=False):
        row = oracle.get(lut.entry_key(sha, candidate, device, config))
        if row is None:
            raise SystemExit(f"the store has no measurement of {candidate.kind} {candidate.item} {candidate.k}")
        values = {k: row[k] for k in VALUES}
        if inject > 0 and candidate.kind != "anchor":
            values["ratio"] += float(rng.normal(0.0, inject))
        return values

    lut.candidate_source = lambda base, analysis, candidate: candidate
    lut.measure_pair = from_oracle


def run(args, tmp: Path) -> None:
    path = lut_accuracy.export_model(args.model, tmp)
    model = load_model(path)
    sha, analysis = model_sha256(model), analyze(model)
    base = resolve_round_to(ProfileConfig())
    device = get_backend(base.backend, **base.backend_options()).device()
    where = device_where(device, base)
    runs = measured_plans(args.log_in)
    if not runs:
        raise SystemExit(f"{args.log_in}: no plan lines of bench/lut_accuracy.py")
    full_store = str(tmp / "full.sqlite")  # profiling writes the model's device-profile rows: never into S
    shutil.copy(args.store, full_store)
    with Store(full_store) as oracle:
        replay_from(oracle, sha, device, args.inject, np.random.default_rng(0))
        tables = {"full": lut.profile(str(path), full_store, base)}
        for mode in ("reduced", "prior"):
            store = str(tmp / f"{mode}.sqlite")
            lut_accuracy.seed_profile(full_store, store, where, sha)
            tables[mode] = lut.profile(str(path), store, replace(base, table=mode, max_measurements=args.max_measurements))
    predictors = {mode: Predictor(table, analysis, analysis.blocks) for mode, table in tables.items()}
    needed = []  # per plan: the width scale the full table's model would need to meet its measurement
    for run_no, rows in sorted(runs.items()):
        rng = np.random.default_rng(args.seed + run_no - 1)
        measured, guesses = [], {mode: [] for mode in predictors}
        for groups, removed_count, ratio in rows:
            kept, removed = lut_accuracy.random_plan(rng, analysis, analysis.blocks, base.round_to)
            if (len(kept), len(removed)) != (groups, removed_count):
                raise SystemExit(f"run {run_no}: the redrawn plans differ from the log's (seed or code changed)")
            measured.append(ratio)
            needed += [width_scale_needed(predictors["full"], kept, removed, ratio)]
            for mode, predictor in predictors.items():
                guesses[mode].append(predictor.predict(kept, removed).corrected)
        m = np.array(measured)
        for mode, table in tables.items():
            err = np.abs(np.array(guesses[mode]) - m) / m
            print(f"{args.model} run {run_no} {mode:8s}: {table.measured:3d} measurements; error median "
                  f"{np.median(err):.1%} worst {err.max():.1%}")
    anchor_lines(predictors["full"], tables["full"], [n for n in needed if n is not None])


def width_saving(predictor: Predictor, kept: dict, removed: list) -> float:
    """The narrowed layers' saving by the fitted per-layer model, before any anchor scale."""
    return float(predictor.parts(kept, {n for b in removed for n in b.nodes})[0] @ predictor.efficiency)


def width_scale_needed(predictor: Predictor, kept: dict, removed: list, measured: float) -> float | None:
    """The width scale that would make the prediction meet `measured`, the depth part as fitted."""
    width = width_saving(predictor, kept, removed)
    if width < 0.02:
        return None
    depth = 1.0 - predictor.predict(kept, removed).corrected - predictor.anchor_scale * width
    return (1.0 - measured - depth) / width


def anchor_lines(predictor: Predictor, table, needed: list[float]) -> None:
    """What sets the full table's width level: each width anchor's measured/predicted saving, the
    fitted scale, and the scale the logged plans needed."""
    for name, anchor in table.anchors.items():
        if anchor.kept and not anchor.removed:
            predicted = width_saving(predictor, anchor.kept, [])
            print(f"full table anchor {name}: {len(anchor.kept)} groups narrowed, saving measured {1 - anchor.ratio:.3f}, "
                  f"predicted {predicted:.3f} before scaling: ratio {(1 - anchor.ratio) / predicted:.2f}")
    if needed:
        print(f"full table width scale {predictor.anchor_scale:.2f}; the logged plans needed a median {np.median(needed):.2f} "
              f"(range {min(needed):.2f}-{max(needed):.2f}, {len(needed)} plans)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_in", help="a bench/lut_accuracy.py log")
    parser.add_argument("--model", required=True)
    parser.add_argument("--store", required=True, help="the store holding the model's full table")
    parser.add_argument("--seed", type=int, default=1, help="the --seed the log was run with")
    parser.add_argument("--max-measurements", type=int, default=None)
    parser.add_argument("--inject", type=float, default=0.0, help="Gaussian noise added to the chosen entries")
    parser.add_argument("--log", default=None, help="log file (default bench/results/lut_replay.txt; - for none)")
    args = parser.parse_args()
    with logged("lut_replay", args.log), tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
