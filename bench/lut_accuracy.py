"""How well do the latency tables predict real pruned models? (ORT CPU, batch 1)

For each model: build the table (timed), then draw random Plans (mixed widths on the round_to grid
and removed blocks), predict each from the table, build it, and measure it interleaved with the
unpruned model. Prints the predicted-vs-measured error of the additive predictor (SP-LAMP eq. 6-7)
and of the per-layer model fitted to the table (toolchain/latency/predict.py), plus table build time
and measurement count.

    python bench/lut_accuracy.py [--models torchvision:resnet18,torchvision:resnet50] [--plans 20]
                                 [--store lut.sqlite] [--log PATH|-]
Without --store the tables are measured in the run (a fresh temporary store); --store keeps them
for bench/budget.py and bench/vs_uniform.py (or reuses what is there: the log's first line says).
Writes bench/results/lut_accuracy.txt.
Goals on the 2-core machine: median error <= 5%, worst <= 10%, resnet50 table <= 10 minutes.
"""
import argparse
import json
import sqlite3
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model, model_sha256  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.backends import get_backend  # noqa: E402
from toolchain.latency.isolated import isolated_table, predict_isolated  # noqa: E402
from toolchain.latency.config import ProfileConfig, resolve_round_to  # noqa: E402
from toolchain.latency.lut import profile  # noqa: E402
from toolchain.latency.measure import interleaved_ratio  # noqa: E402
from toolchain.latency.predict import Predictor  # noqa: E402
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
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20, help="interleaved pairs per table entry")
    parser.add_argument("--measure-runs", type=int, default=60, help="interleaved pairs per plan measurement")
    parser.add_argument("--points", type=int, default=3)
    parser.add_argument("--round-to", type=int, default=None,
                        help="table grid and plan widths (default: the backend's channel block, 16 on AVX-512)")
    parser.add_argument("--store", default=None, help="reuse a store (default: a fresh temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isolated", action="store_true", help="also build HALP's isolated-layer table and compare")
    parser.add_argument("--out", default=None, help="also write every plan, measured and predicted, to this JSON file")
    parser.add_argument("--log", default=None, help="log file (default bench/results/lut_accuracy.txt; - for none)")
    args = parser.parse_args()
    with logged("lut_accuracy", args.log):
        run(args)


def run(args) -> None:
    print(store_line(args.store))
    rng = np.random.default_rng(args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "lut.sqlite")
        for spec in args.models.split(","):
            path = Path(tmp) / (spec.replace(":", "_") + ".onnx")
            export_spec(spec, str(path))
            model = load_model(path)
            config = resolve_round_to(ProfileConfig(round_to=args.round_to, points=args.points, runs=args.runs))
            t0 = time.perf_counter()
            table = profile(str(path), store, config)
            build_s = time.perf_counter() - t0
            with sqlite3.connect(store) as db:  # this model's rows only: the store may hold other models
                count = db.execute("SELECT COUNT(*) FROM measurements WHERE model_sha256 = ?",
                                   (model_sha256(model),)).fetchone()[0]
            analysis = analyze(model)
            blocks = analysis.blocks
            predictor = Predictor(table, analysis, blocks)
            backend = get_backend(config.backend, **config.backend_options())
            halp = isolated_table(analysis, backend, config) if args.isolated else None
            reference = backend.prepare(model.SerializeToString())
            rows, records = [], []
            for i in range(args.plans):
                kept, removed = random_plan(rng, analysis, blocks, config.round_to)
                plan = Plan(channels={g: {"count": k} for g, k in kept.items()}, remove=[b.id for b in removed])
                pruned, _ = apply_plan(model, plan, analysis=analysis, check=False)
                candidate = backend.prepare(pruned.SerializeToString())
                measured = interleaved_ratio(candidate, reference, warmup=config.warmup, runs=args.measure_runs,
                                             pause_s=config.pause_s).ratio
                candidate.close()
                guess = predictor.predict(kept, removed)
                isolated = predict_isolated(halp, table.widths, table.base_ms, kept) if halp else float("nan")
                rows.append((measured, guess.additive, guess.corrected, isolated))
                records.append({"kept": kept, "removed": [b.id for b in removed], "measured": measured,
                                "additive": guess.additive, "corrected": guess.corrected})
                print(f"{spec} plan {i:2d}: {len(kept):2d} groups narrowed, {len(removed)} blocks removed: "
                      f"measured {measured:.3f}, additive {guess.additive:.3f}, corrected {guess.corrected:.3f}"
                      + (f", isolated-layer {isolated:.3f}" if halp else ""))
            reference.close()
            m = np.array(rows)
            add_err = np.abs(m[:, 1] - m[:, 0]) / m[:, 0]
            cor_err = np.abs(m[:, 2] - m[:, 0]) / m[:, 0]
            print(f"\n{spec}: round_to {config.round_to}, table built in {build_s:.0f} s ({build_s / 600:.2f} of the 10-minute goal), "
                  f"{count} measurements of this model in the store, base {table.base_ms:.2f} ms, latency-per-MAC factor {predictor.alpha:.2f}, "
                  f"per-layer fit RMS {predictor.fit_rms:.4f} on the entries ({predictor.outliers} outliers left out), anchor scales {predictor.anchor_scale:.3f} (width) {predictor.depth_scale:.3f} (depth)")
            print(f"{spec}: additive error median {np.median(add_err):.1%} worst {add_err.max():.1%}; "
                  f"corrected error median {np.median(cor_err):.1%} worst {cor_err.max():.1%} "
                  f"({args.plans} plans, measured ratios {m[:, 0].min():.2f}-{m[:, 0].max():.2f})")
            if halp:
                iso_err = np.abs(m[:, 3] - m[:, 0]) / m[:, 0]
                print(f"{spec}: HALP isolated-layer error median {np.median(iso_err):.1%} worst {iso_err.max():.1%} "
                      "(width changes only; removed blocks are not in its table)")
            print()
            if args.out:
                results[spec] = {"table_s": build_s, "measurements": count, "plans": records}
                Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
