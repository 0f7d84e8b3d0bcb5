"""Random filter pruning vs random layer pruning (LayerPrune fig. 1 and fig. 4), in miniature.

A baseline (builtin:resnet56 by default, or builtin:vgg19_bn) is trained briefly on the built-in
MNIST digits and exported. Then:
- N random filter-pruned models: every prunable channel group keeps a fraction drawn uniformly in
  [--min-keep, 1] (LayerPrune: pruning ratio in [0, 0.9]) of its channels, rounded to a multiple of
  --round-to, the kept channels drawn at random;
- N random layer-pruned models: of the L removable blocks (residual blocks of ResNet, single-path
  conv layers of VGG), M are kept at random, M uniform in [1, L]; the others are removed.
Each model's latency is measured on ONNX Runtime (CPU, batch 1) interleaved with the unpruned
model; latency reduction = 1 - latency(pruned)/latency(unpruned). With --finetune-epochs E, a subset
of --finetune-count models per kind (spread over their latency range) is fine-tuned for E epochs
and its top-1 reported (fig. 4).

    python bench/experiments/random_filter_vs_layer.py            # N=100 each (README numbers)
    python bench/experiments/random_filter_vs_layer.py --quick    # N=10 each, ~2-3 minutes
"""
from __future__ import annotations

import argparse
import copy
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_baseline_args, baseline, finetune, markdown_table, out_paths, write_json  # noqa: E402

import numpy as np  # noqa: E402
from graphs.alignment import round_count  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from toolchain.refine import measure_against  # noqa: E402
from toolchain.pruned_dir import load_pruned_module  # noqa: E402
from toolchain.latency.config import ProfileConfig  # noqa: E402
from toolchain.prune import prune_to_dir  # noqa: E402
from toolchain.torch_source import torch_module_for  # noqa: E402
from toolchain.train import TrainConfig  # noqa: E402


def random_filter_plan(analysis, rng, min_keep: float, round_to: int) -> Plan:
    channels = {}
    for g in analysis.groups:
        if not g.prunable:
            continue
        frac = rng.uniform(min_keep, 1.0)
        count = round_count(max(1, math.ceil(frac * g.channels)), g.channels, g.multiplicity, round_to)
        channels[g.id] = {"keep": sorted(rng.choice(g.channels, size=count, replace=False).tolist())}
    return Plan(channels=channels, round_to=round_to, provenance={"criterion": "random", "solver": "random-filter"})


def random_layer_plan(blocks, rng) -> Plan:
    ids = [b.id for b in blocks]
    m = int(rng.integers(1, len(ids) + 1))  # blocks kept, 1 <= M <= L
    kept = set(rng.choice(len(ids), size=m, replace=False).tolist())
    return Plan(remove=[b for i, b in enumerate(ids) if i not in kept],
                provenance={"criterion": "random", "solver": "random-layer", "kept_blocks": m})


def spread(items: list[dict], k: int) -> list[dict]:
    """k items evenly spaced over the latency-reduction range."""
    if k <= 0 or not items:
        return []
    ordered = sorted(items, key=lambda r: r["latency_reduction"])
    idx = sorted({int(round(i)) for i in np.linspace(0, len(ordered) - 1, min(k, len(ordered)))})
    return [ordered[i] for i in idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_baseline_args(parser)
    parser.add_argument("-n", "--count", type=int, default=None, help="random models per kind (default 100, --quick 10)")
    parser.add_argument("--min-keep", type=float, default=0.1, help="per-group keep fraction drawn in [min-keep, 1]")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--runs", type=int, default=None, help="interleaved timing runs per model (default 60, --quick 30)")
    parser.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune a subset for E epochs (0: no)")
    parser.add_argument("--finetune-count", type=int, default=None, help="models fine-tuned per kind (default 10, --quick 2)")
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--out", default="bench/results/experiments/random_filter_vs_layer.json")
    args = parser.parse_args()
    n = args.count or (10 if args.quick else 100)
    runs = args.runs or (30 if args.quick else 60)
    ft_count = args.finetune_count if args.finetune_count is not None else (2 if args.quick else 10)
    json_path, png_path, md_path = out_paths(args.out)
    t_start = time.time()

    base = baseline(args)
    model = load_model(base["onnx"])
    analysis = analyze(model)
    blocks = analysis.blocks
    module, _ = torch_module_for(model)
    print(f"{sum(g.prunable for g in analysis.groups)} prunable channel groups, {len(blocks)} removable blocks")
    config = ProfileConfig()
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="random-fvl-"))
    records = []
    try:
        for kind in ("filter", "layer"):
            for i in range(n):
                plan = random_filter_plan(analysis, rng, args.min_keep, args.round_to) if kind == "filter" \
                    else random_layer_plan(blocks, rng)
                out_dir = work / f"{kind}-{i:03d}"
                summary = prune_to_dir(base["onnx"], str(out_dir), plan, module=copy.deepcopy(module))
                measured = measure_against(base["onnx"], str(out_dir / "model.onnx"), config, runs)
                rec = {"kind": kind, "index": i, "ratio": measured["ratio"], "latency_reduction": 1.0 - measured["ratio"],
                       "reference_ms": measured["reference_ms"], "pruned_ms": measured["pruned_ms"],
                       "params": summary["params"]["after"], "params_before": summary["params"]["before"],
                       "macs": summary["macs"]["after"], "macs_before": summary["macs"]["before"],
                       "removed_blocks": len(plan.remove), "dir": str(out_dir)}
                records.append(rec)
                print(f"  {kind} {i + 1}/{n}: latency {measured['ratio']:.3f} of unpruned, "
                      f"params {rec['params'] / rec['params_before']:.2f}, removed blocks {len(plan.remove)}", flush=True)
        if args.finetune_epochs > 0:
            for kind in ("filter", "layer"):
                for rec in spread([r for r in records if r["kind"] == kind], ft_count):
                    rec["top1_before"], rec["top1_after"] = finetune(
                        load_pruned_module(rec["dir"]), args,
                        TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed))
                    print(f"  fine-tuned {kind} {rec['index']}: LR {100 * rec['latency_reduction']:.1f}%, "
                          f"top-1 {rec['top1_before']:.2f} -> {rec['top1_after']:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for rec in records:
        rec.pop("dir")

    rows, stats = [], {}
    for kind in ("filter", "layer"):
        lr = np.array([100 * r["latency_reduction"] for r in records if r["kind"] == kind])
        pr = np.array([100 * (1 - r["params"] / r["params_before"]) for r in records if r["kind"] == kind])
        acc = [r["top1_after"] for r in records if r["kind"] == kind and "top1_after" in r]
        stats[kind] = {"n": int(lr.size), "lr_min": float(lr.min()), "lr_q1": float(np.percentile(lr, 25)),
                       "lr_median": float(np.median(lr)), "lr_q3": float(np.percentile(lr, 75)),
                       "lr_max": float(lr.max()), "params_reduction_median": float(np.median(pr)),
                       "finetuned": len(acc), "top1_mean": float(np.mean(acc)) if acc else None,
                       "top1_std": float(np.std(acc)) if acc else None}
        s = stats[kind]
        rows.append([kind, s["n"], s["lr_min"], s["lr_q1"], s["lr_median"], s["lr_q3"], s["lr_max"],
                     s["params_reduction_median"],
                     f"{s['top1_mean']:.2f} ± {s['top1_std']:.2f} (n={len(acc)})" if acc else "-"])
    table = markdown_table(["random pruning", "models", "LR min %", "LR q1 %", "LR median %", "LR q3 %", "LR max %",
                            "params reduction median %", f"top-1 after {args.finetune_epochs} ep. fine-tune"], rows)
    header = (f"{args.model} on {args.data} (baseline top-1 {base['val']['top1']:.2f}%, {base['epochs']} training "
              f"epochs); latency on ORT CPU batch 1, interleaved with the unpruned model, {runs} runs; "
              f"LR = latency reduction")
    print("\n" + header + "\n\n" + table)
    md_path.write_text(header + "\n\n" + table + "\n")
    write_json(json_path, {"args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                           "baseline": base, "stats": stats, "models": records, "seconds": time.time() - t_start})
    plot(records, stats, args, png_path)
    print(f"\nwrote {json_path}, {png_path}, {md_path} ({time.time() - t_start:.0f} s)")


def plot(records, stats, args, png_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tuned = [r for r in records if "top1_after" in r]
    fig, axes = plt.subplots(1, 2 if tuned else 1, figsize=(11 if tuned else 5.5, 4.2), squeeze=False)
    ax = axes[0][0]
    data = [[100 * r["latency_reduction"] for r in records if r["kind"] == k] for k in ("filter", "layer")]
    ax.boxplot(data)
    ax.set_xticks([1, 2], [f"random filter\n(n={len(data[0])})", f"random layer\n(n={len(data[1])})"])
    ax.set_ylabel("latency reduction (%)")
    ax.set_title(f"{args.model.split(':')[-1]}, ORT CPU batch 1 (LayerPrune fig. 1)")
    ax.grid(alpha=0.3)
    if tuned:
        ax = axes[0][1]
        for kind, colour in (("filter", "tab:blue"), ("layer", "tab:orange")):
            pts = [r for r in tuned if r["kind"] == kind]
            s = stats[kind]
            ax.scatter([100 * r["latency_reduction"] for r in pts], [r["top1_after"] for r in pts], c=colour,
                       label=f"{kind} ({s['top1_mean']:.2f} ± {s['top1_std']:.2f})")
        ax.set_xlabel("latency reduction (%)")
        ax.set_ylabel(f"top-1 after {args.finetune_epochs} epoch(s) fine-tuning (%)")
        ax.set_title("accuracy vs latency reduction (LayerPrune fig. 4)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


if __name__ == "__main__":
    main()
