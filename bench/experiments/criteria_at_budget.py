"""Pruning criteria at one fixed *measured* latency budget: filter vs layer vs joint (LayerPrune
tables 1-4 in miniature), with a Torch-Pruning row side by side.

A baseline (builtin:resnet56 by default) is trained briefly on the built-in MNIST digits and
exported. Every row prunes it to the same budget (latency ratio vs the unpruned model, ORT CPU,
batch 1, measured interleaved) with `toolchain.refine.prune_to_budget`:
- filter mode: criteria l1, taylor, bn-gamma, sp-lamp (group-knapsack solver on the latency table);
- layer mode: mean:l2, mean:bn-gamma, imprinting, ensemble:mean:l2,mean:bn-gamma,imprinting;
- joint mode: sp-lamp, taylor, taylor-lamp;
- Torch-Pruning: the real `torch_pruning` package (MetaPruner, GroupMagnitudeImportance(p=1):
  L1 group magnitude, uniform ratio per layer, round_to 8, classifier ignored) when it is
  installed, otherwise our implementation of it (`toolchain.prune.uniform_plan`, L1, round_to 8),
  labelled "Torch-Pruning-style". Its uniform ratio is bisected until the measured latency ratio
  meets the same budget.
Each row: measured latency ratio, parameters, top-1 before and after a short fine-tuning.

    python bench/experiments/criteria_at_budget.py              # README numbers
    python bench/experiments/criteria_at_budget.py --quick      # resnet20, 4 rows, 1 FT epoch
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHAPE, add_baseline_args, baseline, finetune  # noqa: E402
from _criteria_report import finetune_epochs, merge, write_report  # noqa: E402

import torch  # noqa: E402

from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from toolchain.refine import BudgetRequest, measure_against, prune_to_budget  # noqa: E402
from toolchain.data import make_loader  # noqa: E402
from toolchain.export import export_onnx  # noqa: E402
from toolchain.latency.config import ProfileConfig  # noqa: E402
from toolchain.prune import prune_to_dir, uniform_plan  # noqa: E402
from toolchain.torch_source import torch_module_for  # noqa: E402
from toolchain.train import TrainConfig  # noqa: E402
from toolchain.pruned_dir import load_pruned_module  # noqa: E402

ROWS = [  # (label, mode, filter criterion, layer criterion)
    ("filter / l1", "filter", "l1", None),
    ("filter / taylor", "filter", "taylor", None),
    ("filter / bn-gamma", "filter", "bn-gamma", None),
    ("filter / sp-lamp", "filter", "sp-lamp", None),
    ("layer / mean:l2", "layer", "l2", "mean:l2"),
    ("layer / mean:bn-gamma", "layer", "bn-gamma", "mean:bn-gamma"),
    ("layer / imprinting", "layer", "l1", "imprinting"),
    ("layer / ensemble", "layer", "l1", "ensemble:mean:l2,mean:bn-gamma,imprinting"),
    ("joint / sp-lamp", "joint", "sp-lamp", None),
    # Taylor's first-order loss estimates price a narrowed layer and a removed block in one currency.
    ("joint / taylor", "joint", "taylor", None),
    # The same estimates ranked within each layer (raw Taylor's scale shrinks with depth and width).
    ("joint / taylor-lamp", "joint", "taylor-lamp", None),
]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def torch_pruning_available() -> bool:
    try:
        import torch_pruning  # noqa: F401
        return True
    except Exception:
        return False


def tp_prune(module: torch.nn.Module, ratio: float, round_to: int) -> torch.nn.Module:
    """Torch-Pruning: L1 group magnitude, the same ratio for every layer, classifier kept."""
    import torch_pruning as tp

    m = copy.deepcopy(module).eval()
    if ratio <= 0:
        return m
    ignored = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    pruner = tp.pruner.MetaPruner(m, torch.randn(*SHAPE), importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=ignored, round_to=round_to, global_pruning=False)
    pruner.step()
    return m


def tp_row(base_onnx: str, module, analysis, budget: float, args, config, work: Path, use_tp: bool, runs: int) -> dict:
    """Bisect the uniform ratio until the measured ratio meets the budget (least pruning that does)."""
    lo, hi, best, tries = 0.0, 0.95, None, []
    for step in range(args.bisect_steps):
        ratio = (lo + hi) / 2
        cand = work / f"tp-{step}"
        if use_tp:
            pruned = tp_prune(module, ratio, args.round_to)
            cand.mkdir(parents=True, exist_ok=True)
            export_onnx(pruned, SHAPE, cand / "model.onnx")
        else:
            prune_to_dir(base_onnx, str(cand), uniform_plan(analysis, ratio, args.round_to), module=copy.deepcopy(module))
            pruned = None
        measured = measure_against(base_onnx, str(cand / "model.onnx"), config, runs)["ratio"]
        tries.append({"ratio": ratio, "measured": measured})
        print(f"    uniform ratio {ratio:.3f}: measured latency {measured:.3f}", flush=True)
        if measured <= budget * (1 + args.tolerance):
            if best is None or ratio < best["ratio"]:
                best = {"ratio": ratio, "measured": measured, "dir": cand, "module": pruned}
            hi = ratio
        else:
            lo = ratio
    if best is None:  # never met: take the fastest one measured (timings are noisy, not always monotone)
        i = min(range(len(tries)), key=lambda k: tries[k]["measured"])
        best = {"ratio": tries[i]["ratio"], "measured": tries[i]["measured"], "dir": work / f"tp-{i}",
                "module": tp_prune(module, tries[i]["ratio"], args.round_to) if use_tp else None}
    return {**best, "tries": tries}


def _tp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:  # torch_pruning itself has no __version__
        return version("torch-pruning")
    except PackageNotFoundError:
        return "1.x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_baseline_args(parser)
    parser.add_argument("--budget", type=float, default=0.6, help="measured latency ratio to meet")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="per row (default 3, --quick 1)")
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--rows", default=None,
                        help="comma-separated row labels or modes to run (default all; --quick: filter / l1, "
                             "layer / imprinting, joint / sp-lamp, torch-pruning)")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--bisect-steps", type=int, default=None, help="Torch-Pruning ratio bisection (default 7, --quick 4)")
    parser.add_argument("--profile-runs", type=int, default=None, help="latency-table runs (default 25, --quick 10)")
    parser.add_argument("--profile-points", type=int, default=None, help="widths per group (default 4, --quick 2)")
    parser.add_argument("--measure-runs", type=int, default=None, help="interleaved runs per check (default 60, --quick 30)")
    parser.add_argument("--refine", type=int, default=None, help="budget refinements (default 4, --quick 2)")
    parser.add_argument("--batches", type=int, default=8, help="batches for data-dependent criteria")
    parser.add_argument("--no-torch-pruning", action="store_true", help="use our uniform_plan even if torch_pruning imports")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds: a baseline and every row per seed, the table in mean +- sample std "
                             "(default: --seed alone)")
    parser.add_argument("--out", default="bench/results/experiments/criteria_at_budget.json")
    parser.add_argument("--merge", default=None, metavar="A.json,B.json",
                        help="run nothing: one report at --out from earlier runs of the same experiment (e.g. "
                             "--rows filter,joint and --rows layer,torch-pruning on the same cached baselines)")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge.split(","), args.out)
        return
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    q = args.quick
    ft_epochs = finetune_epochs(args)
    args.bisect_steps = args.bisect_steps or (4 if q else 7)
    runs = args.measure_runs or (30 if q else 60)
    refine = args.refine if args.refine is not None else (2 if q else 4)
    config = ProfileConfig(runs=args.profile_runs or (10 if q else 25), points=args.profile_points or (2 if q else 4),
                           round_to=args.round_to)
    t_start = time.time()

    bases, results = {}, []
    for seed in seeds:
        args.seed = seed
        bases[seed], rows = run_seed(args, config, ft_epochs, runs, refine)
        results += [{**r, "seed": seed} for r in rows]
    write_report(args, bases, results, time.time() - t_start)


def run_seed(args, config, ft_epochs: int, runs: int, refine: int) -> tuple[dict, list[dict]]:
    """One seed: its baseline (trained or cached) and every row; returns (baseline, rows)."""
    base = baseline(args)
    store = str(Path(base["onnx"]).with_suffix(f".lut-r{config.runs}-p{config.points}.sqlite"))
    model = load_model(base["onnx"])
    analysis = analyze(model)
    module, _ = torch_module_for(model)
    loader = make_loader(args.data, SHAPE, "train", 64, seed=args.seed, shuffle=False)  # same batches every scoring
    base_params = n_params(module)
    use_tp = torch_pruning_available() and not args.no_torch_pruning
    tp_label = (f"Torch-Pruning {_tp_version()} (L1 group magnitude, uniform, round_to 8)" if use_tp else
                "Torch-Pruning-style (our implementation of its L1 group magnitude, uniform)")
    rows_arg = args.rows or ("filter / l1,layer / imprinting,joint / sp-lamp,torch-pruning" if args.quick else None)
    wanted = set(s.strip() for s in rows_arg.split(",")) if rows_arg else None
    ft = TrainConfig(epochs=ft_epochs, lr=args.finetune_lr, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="criteria-budget-"))
    results = []
    try:
        for label, mode, crit, layer_crit in ROWS + [(tp_label, "torch-pruning", "l1", None)]:
            if wanted and label not in wanted and mode not in wanted:
                continue
            print(f"[{label}]", flush=True)
            t0 = time.time()
            out_dir = work / f"row-{len(results)}"
            try:
                if mode == "torch-pruning":
                    best = tp_row(base["onnx"], module, analysis, args.budget, args, config, work, use_tp, runs)
                    measured, extra = best["measured"], {"uniform_ratio": best["ratio"], "tries": best["tries"]}
                    pruned = best["module"] if use_tp else load_pruned_module(best["dir"])
                    params, removed = n_params(pruned), 0
                    before, after = finetune(pruned, args, ft)
                else:
                    request = BudgetRequest(budget=args.budget, mode=mode, criterion=crit, layer_criterion=layer_crit,
                                            loader=loader, batches=args.batches, round_to=args.round_to,
                                            tolerance=args.tolerance, refine=refine, measure_runs=runs,
                                            log=lambda m: print("   " + m, flush=True))
                    summary = prune_to_budget(base["onnx"], str(out_dir), request, store, config)
                    measured = summary["latency"]["measured"]
                    pruned = load_pruned_module(out_dir)
                    params, removed = n_params(pruned), len(summary["removed"])
                    extra = {"met": summary["latency"]["met"], "predicted": summary["latency"]["predicted"]}
                    before, after = finetune(pruned, args, ft)
                rec = {"row": label, "mode": mode, "criterion": layer_crit or crit, "measured_ratio": measured,
                       "params": params, "params_ratio": params / base_params, "removed_blocks": removed,
                       "top1_before_ft": before, "top1_after_ft": after, "seconds": time.time() - t0, **extra}
            except Exception as exc:  # one failing row must not lose the others; reported in the table
                rec = {"row": label, "mode": mode, "criterion": layer_crit or crit, "error": f"{type(exc).__name__}: {exc}",
                       "seconds": time.time() - t0}
                print(f"   FAILED: {rec['error']}", flush=True)
            results.append(rec)
            if "error" not in rec:
                print(f"   measured {rec['measured_ratio']:.3f}, params {rec['params_ratio']:.2f}, top-1 "
                      f"{rec['top1_before_ft']:.2f} -> {rec['top1_after_ft']:.2f} ({rec['seconds']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    return {**base, "params": base_params}, results


if __name__ == "__main__":
    main()
