"""One-shot vs iterative ranking, with the Spearman correlation between the two (LayerPrune
supplement tables 1 and 2), in miniature.

Layers (supplement table 2): for N = 1..--max-blocks removed blocks, one-shot removes the N blocks
ranked least important on the unpruned model; iterative removes one block at a time and re-scores
the remaining blocks on the pruned model after each removal. Spearman = rank correlation between
the one-shot scores and the last iterative scores of the blocks that survive.

Filters (supplement table 1): at a total pruning ratio P, one-shot keeps the top (1-P) of every
channel group by the criterion on the unpruned model; iterative prunes --step (10%) of the original
channels per step, re-scoring the pruned model each step. Spearman is computed per group over the
surviving channels and averaged (weighted by survivors).

Both pruned models of every setting are fine-tuned for the same short schedule; top-1 reported.

    python bench/experiments/oneshot_vs_iterative.py             # README numbers
    python bench/experiments/oneshot_vs_iterative.py --quick     # resnet20, fewer settings, ~3 min
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHAPE, add_baseline_args, baseline, finetune, markdown_table, out_paths, write_json  # noqa: E402

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from toolchain.criteria import filter_scores, layer_scores  # noqa: E402
from toolchain.data import make_loader  # noqa: E402
from toolchain.prune import prune_to_dir  # noqa: E402
from toolchain.torch_source import torch_module_for  # noqa: E402
from toolchain.train import TrainConfig  # noqa: E402
from toolchain.pruned_dir import load_pruned_module  # noqa: E402


def state_of(onnx_path: str, out_dir: Path | None):
    """(module, analysis, blocks) of the base model or of a pruned DIR."""
    path = onnx_path if out_dir is None else str(out_dir / "model.onnx")
    analysis = analyze(load_model(path))
    module = torch_module_for(load_model(path))[0] if out_dir is None else load_pruned_module(out_dir)
    return module, analysis, analysis.blocks


def layers(base_onnx, crit, n_max, loader, batches, work: Path) -> list[dict]:
    module, analysis, blocks = state_of(base_onnx, None)
    one_shot = layer_scores(crit, module, analysis, blocks, loader=loader, batches=batches)
    order = sorted(one_shot, key=lambda b: one_shot[b])  # least important first
    removed, out = [], []
    for n in range(1, n_max + 1):
        cur_dir = work / f"iter-{crit}-{n - 1}" if removed else None
        module, analysis, blocks = state_of(base_onnx, cur_dir)
        scores = layer_scores(crit, module, analysis, blocks, loader=loader, batches=batches)
        common = [b for b in scores if b in one_shot and b not in removed]
        removed.append(min(common, key=lambda b: scores[b]))
        it_dir, os_dir = work / f"iter-{crit}-{n}", work / f"oneshot-{crit}-{n}"
        prune_to_dir(base_onnx, str(it_dir), Plan(remove=list(removed)))
        prune_to_dir(base_onnx, str(os_dir), Plan(remove=order[:n]))
        # the correlation over the survivors, the iterative scores taken after the n-th removal
        m2, a2, b2 = state_of(base_onnx, it_dir)
        after = layer_scores(crit, m2, a2, b2, loader=loader, batches=batches)
        survivors = [b for b in after if b in one_shot and b not in removed]
        rho = float(spearmanr([one_shot[b] for b in survivors], [after[b] for b in survivors])[0])
        out.append({"kind": "layer", "criterion": crit, "setting": f"{n} block(s)", "n": n,
                    "one_shot_removed": order[:n], "iterative_removed": list(removed), "same_set": set(order[:n]) == set(removed),
                    "spearman": rho, "dirs": (str(os_dir), str(it_dir))})
    return out


def rekey(scores: dict, analysis, base_members: dict) -> dict:
    """Group ids are not stable across pruning (a group is named after one of its members, which
    may change): map the pruned model's groups back to the base ids by their member modules."""
    out = {}
    for g in analysis.groups:
        if g.id not in scores or not g.prunable:
            continue
        best = max(base_members, key=lambda gid: len(base_members[gid] & set(g.members)))
        if base_members[best] & set(g.members):
            out[best] = scores[g.id]
    return out


def filters(base_onnx, crit, ratio, step, loader, batches, work: Path) -> dict:
    module, analysis, _ = state_of(base_onnx, None)
    base_members = {g.id: set(g.members) for g in analysis.groups if g.prunable}
    one_shot = filter_scores(crit, module, analysis, loader=loader, batches=batches)
    sizes = {g.id: g.channels for g in analysis.groups if g.prunable and g.id in one_shot}
    target = {gid: max(1, math.ceil(c * (1 - ratio))) for gid, c in sizes.items()}
    os_keep = {gid: sorted(np.argsort(-one_shot[gid], kind="stable")[:target[gid]].tolist()) for gid in sizes}
    os_dir = work / f"oneshot-{crit}-{ratio}"
    prune_to_dir(base_onnx, str(os_dir), Plan(channels={g: {"keep": k} for g, k in os_keep.items()}))
    present = {gid: list(range(c)) for gid, c in sizes.items()}  # original unit indices, sorted
    steps = max(1, int(round(ratio / step)))
    cur_dir, cur_scores = None, one_shot
    for s in range(1, steps + 1):
        if cur_dir is not None:
            m, a, _ = state_of(base_onnx, cur_dir)
            cur_scores = rekey(filter_scores(crit, m, a, loader=loader, batches=batches), a, base_members)
        for gid, c in sizes.items():
            keep_n = max(target[gid], math.ceil(c * (1 - step * s))) if s < steps else target[gid]
            sc = np.asarray(cur_scores[gid]) if gid in cur_scores and len(cur_scores[gid]) == len(present[gid]) else None
            if sc is None:
                raise RuntimeError(f"group {gid} not found with {len(present[gid])} units after pruning")
            best = np.argsort(-sc, kind="stable")[:keep_n]
            present[gid] = sorted(present[gid][i] for i in best)
        cur_dir = work / f"iter-{crit}-{ratio}-{s}"
        prune_to_dir(base_onnx, str(cur_dir), Plan(channels={g: {"keep": k} for g, k in present.items()}))
    m, a, _ = state_of(base_onnx, cur_dir)
    final = rekey(filter_scores(crit, m, a, loader=loader, batches=batches), a, base_members)
    rhos, weights = [], []
    for gid in sizes:
        if len(present[gid]) > 2 and gid in final:
            r = spearmanr(np.asarray(one_shot[gid])[present[gid]], final[gid])[0]
            if np.isfinite(r):
                rhos.append(r)
                weights.append(len(present[gid]))
    overlap = sum(len(set(present[g]) & set(os_keep[g])) for g in sizes) / max(1, sum(len(os_keep[g]) for g in sizes))
    return {"kind": "filter", "criterion": crit, "setting": f"{ratio:.0%} filters, {steps} step(s)", "ratio": ratio,
            "spearman": float(np.average(rhos, weights=weights)) if rhos else float("nan"), "kept_overlap": overlap,
            "dirs": (str(os_dir), str(cur_dir))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_baseline_args(parser)
    parser.add_argument("--layer-criteria", default=None, help="default imprinting,mean:l2,mean:bn-gamma (--quick imprinting)")
    parser.add_argument("--filter-criteria", default=None, help="default l1,taylor,bn-gamma (--quick l1)")
    parser.add_argument("--max-blocks", type=int, default=None, help="N = 1..max removed blocks (default 4, --quick 2)")
    parser.add_argument("--ratios", default=None, help="filter pruning ratios (default 0.2,0.3, --quick 0.2)")
    parser.add_argument("--step", type=float, default=0.1, help="iterative filter step (fraction of the original)")
    parser.add_argument("--batches", type=int, default=None, help="batches for data criteria (default 8, --quick 4)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default 2, --quick 1; 0 skips fine-tuning")
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--out", default="bench/results/experiments/oneshot_vs_iterative.json")
    args = parser.parse_args()
    q = args.quick
    layer_crits = (args.layer_criteria or ("imprinting" if q else "imprinting,mean:l2,mean:bn-gamma")).split(",")
    layer_crits = [c for c in layer_crits if c]
    filter_crits = [c for c in (args.filter_criteria if args.filter_criteria is not None else ("l1" if q else "l1,taylor,bn-gamma")).split(",") if c]
    max_blocks = args.max_blocks or (2 if q else 4)
    ratios = [float(r) for r in (args.ratios or ("0.2" if q else "0.2,0.3")).split(",")]
    batches = args.batches or (4 if q else 8)
    ft_epochs = args.finetune_epochs if args.finetune_epochs is not None else (1 if q else 2)
    json_path, png_path, md_path = out_paths(args.out)
    t_start = time.time()

    base = baseline(args)
    loader = make_loader(args.data, SHAPE, "train", 64, seed=args.seed, shuffle=False)  # same batches every scoring
    work = Path(tempfile.mkdtemp(prefix="oneshot-iter-"))
    results = []
    try:
        for crit in layer_crits:
            print(f"[layer / {crit}]", flush=True)
            results += layers(base["onnx"], crit, max_blocks, loader, batches, work)
        for crit in filter_crits:
            for ratio in ratios:
                print(f"[filter / {crit} / {ratio:.0%}]", flush=True)
                results.append(filters(base["onnx"], crit, ratio, args.step, loader, batches, work))
        for r in results:
            os_dir, it_dir = r.pop("dirs")
            if ft_epochs > 0:
                for tag, d in (("one_shot", os_dir), ("iterative", it_dir)):
                    if tag == "iterative" and r.get("same_set"):
                        r["iterative_top1"], r["iterative_top1_before"] = r["one_shot_top1"], r["one_shot_top1_before"]
                        continue
                    r[f"{tag}_top1_before"], r[f"{tag}_top1"] = finetune(
                        load_pruned_module(d), args, TrainConfig(epochs=ft_epochs, lr=args.finetune_lr, seed=args.seed))
            print(f"  {r['kind']} {r['criterion']} {r['setting']}: spearman {r['spearman']:.3f}, top-1 one-shot "
                  f"{r.get('one_shot_top1', float('nan')):.2f}, iterative {r.get('iterative_top1', float('nan')):.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [[r["kind"], r["criterion"], r["setting"], f"{r.get('one_shot_top1', float('nan')):.2f}",
             f"{r.get('iterative_top1', float('nan')):.2f}", f"{r['spearman']:.3f}",
             ("same blocks" if r["same_set"] else "different blocks") if r["kind"] == "layer"
             else f"{r['kept_overlap']:.0%} of kept filters shared"] for r in results]
    table = markdown_table(["kind", "criterion", "pruned", f"one-shot top-1 ({ft_epochs} ep. FT)",
                            f"iterative top-1 ({ft_epochs} ep. FT)", "Spearman (survivors)", "selection"], rows)
    header = f"{args.model} on {args.data}: baseline top-1 {base['val']['top1']:.2f}%"
    print("\n" + header + "\n\n" + table)
    md_path.write_text(header + "\n\n" + table + "\n")
    write_json(json_path, {"args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "baseline": base,
                           "results": results, "seconds": time.time() - t_start})
    plot(results, png_path)
    print(f"\nwrote {json_path}, {png_path}, {md_path} ({time.time() - t_start:.0f} s)")


def plot(results, png_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['criterion']}\n{r['setting']}" for r in results]
    ax.bar(range(len(results)), [r["spearman"] for r in results],
           color=["tab:orange" if r["kind"] == "layer" else "tab:blue" for r in results])
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels(labels, fontsize=6, rotation=45, ha="right")
    ax.set_ylabel("Spearman: one-shot vs iterative ranking")
    ax.set_ylim(min(0, min([r["spearman"] for r in results if np.isfinite(r["spearman"])] or [0])), 1.05)
    ax.set_title("one-shot vs iterative (orange: layers, blue: filters)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


if __name__ == "__main__":
    main()
