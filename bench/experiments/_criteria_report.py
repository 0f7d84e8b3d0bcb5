"""The criteria-at-budget report: its table, the rows paired by seed, the figure, and merging the JSON
of several runs at the same budget (e.g. `--rows filter,joint` and `--rows layer,torch-pruning` on the
same cached baselines) into one report."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from _common import markdown_table, out_paths, write_json

PAIR_WITH = "joint / sp-lamp"  # the row the others are compared with, seed by seed


def finetune_epochs(args) -> int:
    return args.finetune_epochs if args.finetune_epochs is not None else (1 if args.quick else 3)


def stat(values: list[float], digits: int) -> str:
    """`mean ± sample std (n=k)` over seeds; the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


def table_rows(results: list[dict]) -> list[list]:
    """One table row per method / criterion, its seeds summarised; a row that failed for a seed says so."""
    rows = []
    for label in dict.fromkeys(r["row"] for r in results):
        done = [r for r in results if r["row"] == label and "error" not in r]
        failed = [r for r in results if r["row"] == label and "error" in r]
        if not done:
            rows.append([label, "-", "-", "-", "-", "-", "error: " + failed[0]["error"][:80]])
            continue
        ratio = [r["measured_ratio"] for r in done]
        rows.append([label, stat(ratio, 3), stat([100 * (1 - x) for x in ratio], 1),
                     f"{statistics.mean(r['params'] for r in done):,.0f} "
                     f"({statistics.mean(r['params_ratio'] for r in done):.2f})",
                     stat([float(r["removed_blocks"]) for r in done], 1), stat([r["top1_before_ft"] for r in done], 2),
                     stat([r["top1_after_ft"] for r in done], 2) + (f" ({len(failed)} failed)" if failed else "")])
    return rows


def paired_rows(results: list[dict], bases: dict) -> list[list]:
    """PAIR_WITH minus each other row (and the unpruned baseline), seed by seed. Every row of a seed
    prunes that seed's baseline, so the difference leaves out the baselines' own spread. Empty with
    fewer than two seeds or without the PAIR_WITH row."""
    top1 = {(r["row"], r["seed"]): r["top1_after_ft"] for r in results if "error" not in r}
    seeds = sorted({r["seed"] for r in results})
    if len(seeds) < 2 or not any(row == PAIR_WITH for row, _ in top1):
        return []
    others = {"unpruned baseline": {s: bases[s]["val"]["top1"] for s in seeds if s in bases}}
    for label in dict.fromkeys(r["row"] for r in results):
        if label != PAIR_WITH:
            others[label] = {s: top1[(label, s)] for s in seeds if (label, s) in top1}
    rows = []
    for label, theirs in others.items():
        diffs = [top1[(PAIR_WITH, s)] - theirs[s] for s in seeds if (PAIR_WITH, s) in top1 and s in theirs]
        if diffs:
            rows.append([label, stat(diffs, 2), f"{sum(d > 0 for d in diffs)} of {len(diffs)}"])
    return rows


def write_report(args, bases: dict, results: list[dict], seconds: float) -> None:
    """The .md (table + pairing), .json and .png beside `args.out`."""
    json_path, png_path, md_path = out_paths(args.out)
    ft_epochs = finetune_epochs(args)
    base = bases[min(bases)]
    table = markdown_table(["method / criterion", "measured latency ratio", "LR %", "params (of baseline)",
                            "blocks removed", "top-1 pruned", f"top-1 after {ft_epochs} ep. FT"], table_rows(results))
    top1 = stat([b["val"]["top1"] for b in bases.values()], 2)
    seeds_note = f" (seeds {', '.join(map(str, sorted(bases)))}: mean ± sample std, n = seeds)" if len(bases) > 1 else ""
    header = (f"{args.model} on {args.data}{seeds_note}: baseline top-1 (%) {top1}, {base['params']:,} params; "
              f"budget {args.budget} of the unpruned latency (ORT CPU batch 1, measured interleaved, "
              f"tolerance {args.tolerance:.0%}); fine-tuning {ft_epochs} epoch(s) lr {args.finetune_lr}"
              + (f"; baseline and fine-tuning on the first {args.train_subset:,} train images"
                 if getattr(args, "train_subset", 0) else ""))
    text = header + "\n\n" + table + "\n"
    pairs = paired_rows(results, bases)
    if pairs:
        text += (f"\nPaired by seed ({PAIR_WITH} minus the row, top-1 points after fine-tuning; the seeds where "
                 f"{PAIR_WITH} is ahead):\n\n" + markdown_table([f"{PAIR_WITH} minus", "difference", "ahead"], pairs) + "\n")
    print("\n" + text)
    md_path.write_text(text)
    write_json(json_path, {"args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "baseline": base,
                           "baselines": {str(k): v for k, v in bases.items()}, "baseline_params": base["params"],
                           "rows": results, "seconds": seconds})
    plot(results, base, args, ft_epochs, png_path)
    print(f"\nwrote {json_path}, {png_path}, {md_path} ({seconds:.0f} s)")


def merge(paths: list[str], out: str) -> None:
    """One report from several runs' JSON: the same model, data, budget, fine-tuning and baselines;
    a (row, seed) present in more than one run is taken from the last."""
    try:
        runs = [json.loads(Path(p).read_text()) for p in paths]
    except (OSError, ValueError) as exc:
        _fail(f"cannot read a run to merge: {exc}")
    keys = ("model", "data", "budget", "finetune_epochs", "finetune_lr", "train_subset", "train_epochs", "quick")
    first = runs[0]["args"]
    for p, run in zip(paths[1:], runs[1:]):
        differ = [k for k in keys if (run["args"].get(k) or None) != (first.get(k) or None)]  # older runs: no subset key
        onnx = {s: b["onnx"] for s, b in run["baselines"].items()}
        if differ or any(runs[0]["baselines"].get(s, {}).get("onnx") not in (None, f) for s, f in onnx.items()):
            _fail(f"{p} is not the same experiment as {paths[0]} (it differs in {', '.join(differ) or 'its baselines'})")
    bases, rows = {}, {}
    for path, run in zip(paths, runs):
        bases.update({int(s): {**b, "params": run["baseline_params"]} for s, b in run["baselines"].items()})
        rows.update({(r["row"], r["seed"]): {**r, "merged_from": Path(path).name} for r in run["rows"]})
    args = argparse.Namespace(**{**first, "out": out})
    write_report(args, bases, list(rows.values()), sum(run["seconds"] for run in runs))


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def plot(results, base, args, ft_epochs, png_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"filter": "tab:blue", "layer": "tab:orange", "joint": "tab:green", "torch-pruning": "tab:red"}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in results:
        if "error" in r:
            continue
        ax.scatter(r["measured_ratio"], r["top1_after_ft"], c=colours[r["mode"]], s=40)
        ax.annotate(r["row"].split(" (")[0], (r["measured_ratio"], r["top1_after_ft"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    for mode, c in colours.items():
        ax.scatter([], [], c=c, label=mode)
    ax.axvline(args.budget, color="grey", ls="--", lw=1, label=f"budget {args.budget}")
    ax.axhline(base["val"]["top1"], color="black", ls=":", lw=1, label="baseline top-1")
    ax.set_xlabel("measured latency ratio (ORT CPU, batch 1)")
    ax.set_ylabel(f"top-1 after {ft_epochs} epoch(s) fine-tuning (%)")
    ax.set_title(f"criteria at a fixed latency budget, {args.model.split(':')[-1]} / {args.data}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
