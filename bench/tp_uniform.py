"""Torch-Pruning 1.6's uniform plan for a measured latency budget (bench/accuracy_at_latency.py's baseline).

One ratio for every layer (L1 group magnitude, round_to as issue 12 asks), bisected on the *measured*
latency; the least pruning that meets the budget. The plan kept is measured afresh before it is reported,
as compress's own kept plans are (`prune --confirm`): a plan kept for one lucky figure would flatter it.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from toolchain.export import export_onnx
from toolchain.refine import measure_afresh, measure_against, meets_budget

CONFIRM = 1  # fresh measurements of the kept plan: compress's default (`BudgetRequest.confirm`)


def tp_prune(module: torch.nn.Module, shape, ratio: float, round_to: int) -> torch.nn.Module:
    import torch_pruning as tp

    m = copy.deepcopy(module).eval()
    if ratio > 0:
        ignored = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
        tp.pruner.MetaPruner(m, torch.randn(*shape), importance=tp.importance.GroupMagnitudeImportance(p=1),
                             pruning_ratio=ratio, ignored_layers=ignored, round_to=round_to, global_pruning=False).step()
    return m


def torch_pruning_row(args, base: dict, budget: float, work: Path, round_to: int) -> tuple[torch.nn.Module, dict]:
    """Bisect Torch-Pruning's uniform ratio on the measured latency; the least pruning that meets it.

    Past some ratio Torch-Pruning stops pruning the groups whose rounded width would reach zero and leaves
    them whole (ResNet-20, round_to 8: 31,946 parameters at ratio 0.75, 71,770 at 0.8, all 272,474 from
    0.89). Such a ratio is not "too slow, prune more" but past the cliff: it is not timed, and the search
    continues below it. So the fastest plan found is Torch-Pruning's real floor, not an unpruned model.
    """
    from toolchain.torch_source import torch_module_for
    from graphs.onnx_io import load_model

    module, _ = torch_module_for(load_model(base["onnx"]))
    lo, hi, tries = 0.0, 0.95, []
    for step in range(args.bisect_steps):
        ratio = (lo + hi) / 2
        pruned = tp_prune(module, base["shape"], ratio, round_to)
        params = sum(p.numel() for p in pruned.parameters())
        if any(t["ratio"] < ratio and t["params"] < params for t in tries):
            tries.append({"ratio": ratio, "params": params, "past_cliff": True})
            print(f"    torch-pruning ratio {ratio:.3f}: {params} parameters, more than a smaller ratio kept: "
                  f"past the cliff, not timed", flush=True)
            hi = ratio
            continue
        cand = work / f"tp-{step}.onnx"
        export_onnx(pruned, base["shape"], cand)
        measured = measure_against(base["onnx"], str(cand), args.profile, args.measure_runs)
        tries.append({"ratio": ratio, "params": params, "measured": measured["ratio"], "onnx": str(cand),
                      "met": meets_budget(measured, budget)})
        print(f"    torch-pruning ratio {ratio:.3f}: measured {measured['ratio']:.3f}", flush=True)
        lo, hi = (lo, ratio) if tries[-1]["met"] else (ratio, hi)
    kept = confirmed_plan(args, base, tries, budget)
    if kept is None:  # never met: the fastest one measured (timings are noisy, not always monotone)
        fastest = min((t for t in tries if "measured" in t), key=lambda t: t.get("fresh", t["measured"]))
        kept = {"uniform_ratio": fastest["ratio"], "ratio": fastest.get("fresh", fastest["measured"]), "met": False}
    tries = [{k: v for k, v in t.items() if k != "onnx"} for t in tries]  # the files are temporary
    return tp_prune(module, base["shape"], kept["uniform_ratio"], round_to), {"met": True, **kept, "tries": tries}


def confirmed_plan(args, base: dict, tries: list[dict], budget: float) -> dict | None:
    """The least-pruned plan that met the budget and still meets it measured afresh; its fresh figure is
    the one reported. A plan whose fresh figure misses gives way to the next; None when none is left."""
    for t in sorted((t for t in tries if t.get("met")), key=lambda t: t["ratio"]):
        fresh = measure_afresh(base["onnx"], t["onnx"], args.profile, args.measure_runs, CONFIRM)
        t["fresh"] = fresh["ratio"]
        ok = meets_budget(fresh, budget)
        print(f"    torch-pruning ratio {t['ratio']:.3f}: confirmed {fresh['ratio']:.3f} +- {fresh['ratio_se']:.3f} "
              f"(chosen on {t['measured']:.3f}){'' if ok else ': misses the budget'}", flush=True)
        if ok:
            return {"uniform_ratio": t["ratio"], **fresh, "ratio_when_chosen": t["measured"], "confirmed": CONFIRM}
    return None
