"""Latency-guided pruning vs a uniform 50% magnitude plan, at equal parameter count.

The uniform plan (`--ratio 0.5 --round-to 8`) removes half of every group's channels by L1 norm.
The latency-guided plan uses the same importance (L1 by default) but lets the solver decide how
many channels each group keeps, from the latency tables of this backend. Its budget is bisected
(solver only, no measurement) until it keeps at least as many parameters as the uniform plan, by
the smallest margin found: the comparison never favours the guided plan with fewer parameters.
Both pruned models are then timed interleaved with each other. Prints
latency(guided) / latency(uniform): below 1 means the latency-guided plan is faster on the backend
it was profiled on.

    python bench/vs_uniform.py [--model torchvision:resnet18] [--modes filter,joint] [--criterion l1]
                               [--store lut.sqlite] [--log PATH|-]

Without --store the table is measured in the run (a fresh temporary store); with --store a table
already there is reused, and the log's first line says so. Writes bench/results/vs_uniform_NAME.txt.
"""
import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
from graphs.deps import analyze  # noqa: E402
from graphs.errors import InputError  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from graphs.stats import count_params  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.refine import measure_against  # noqa: E402
from toolchain.criteria import filter_scores  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.config import ProfileConfig, resolve_round_to  # noqa: E402
from toolchain.latency.lut import profile  # noqa: E402
from toolchain.prune import prune_to_dir, uniform_plan  # noqa: E402
from toolchain.torch_source import torch_module_for  # noqa: E402
from toolchain.solve.budget import solve_filter, solve_joint  # noqa: E402
from benchlog import logged, store_line  # noqa: E402


def plan_at_params(model, analysis, table, scores, mode: str, target_params: int, round_to: int, steps: int = 14):
    """The solver's plan whose parameter count is the smallest one >= target_params (budget bisection)."""
    blocks = analysis.blocks

    def solve(budget):
        if mode == "joint":
            return solve_joint(analysis, table, blocks, scores, budget, round_to, "guided")
        return solve_filter(analysis, table, scores, budget, round_to, criterion="guided")

    lo, hi, best = 0.0, 1.0, None
    for _ in range(steps):
        budget = (lo + hi) / 2
        try:
            decision = solve(budget)
        except InputError:  # below the smallest reachable latency
            lo = budget
            continue
        params = count_params(apply_plan(model, decision.plan, analysis=analysis, check=False)[0])
        if params >= target_params:
            hi = budget
            if best is None or params < best[1]:
                best = (decision, params, budget)
        else:
            lo = budget
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--modes", default="filter,joint")
    parser.add_argument("--criterion", default="l1", help="importance for the guided plan (uniform always uses l1)")
    parser.add_argument("--runs", type=int, default=100, help="interleaved pairs per head-to-head measurement")
    parser.add_argument("--store", default=None, help="reuse this latency store (default: a fresh temporary one)")
    parser.add_argument("--log", default=None, help="log file (default bench/results/vs_uniform_NAME.txt; - for none)")
    args = parser.parse_args()
    with logged("vs_uniform_" + args.model.split(":")[-1], args.log):
        run(args)


def run(args) -> None:
    print(store_line(args.store))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = args.store or str(tmp / "lut.sqlite")
        config = resolve_round_to(ProfileConfig())  # the guided plan uses the table's grid
        path = tmp / "model.onnx"
        export_spec(args.model, str(path))
        model = load_model(path)
        analysis = analyze(model)
        uniform = prune_to_dir(str(path), str(tmp / "uniform"), uniform_plan(analysis, 0.5, 8))
        target = uniform["params"]["after"]
        t0 = time.perf_counter()
        table = profile(str(path), store, config)
        print(f"{args.model}: latency table ready in {time.perf_counter() - t0:.0f} s; uniform 50% plan keeps "
              f"{target:,} of {uniform['params']['before']:,} params")
        scores = filter_scores(args.criterion, torch_module_for(model)[0], analysis)
        results = []
        for mode in args.modes.split(","):
            decision, params, budget = plan_at_params(model, analysis, table, scores, mode, target, config.round_to)
            out = tmp / f"guided-{mode}"
            prune_to_dir(str(path), str(out), decision.plan)
            head = measure_against(str(tmp / "uniform" / "model.onnx"), str(out / "model.onnx"), config, args.runs)
            vs_base = measure_against(str(path), str(out / "model.onnx"), config, args.runs // 2)["ratio"]
            uni_base = measure_against(str(path), str(tmp / "uniform" / "model.onnx"), config, args.runs // 2)["ratio"]
            row = {"model": args.model, "mode": mode, "criterion": args.criterion, "solver_budget": round(budget, 4),
                   "uniform_params": target, "guided_params": params, "params_ratio": round(params / target, 4),
                   "uniform_ms": round(head["reference_ms"], 3), "guided_ms": round(head["pruned_ms"], 3),
                   "guided_over_uniform": round(head["ratio"], 4), "guided_vs_unpruned": round(vs_base, 4),
                   "uniform_vs_unpruned": round(uni_base, 4), "removed_blocks": len(decision.removed)}
            results.append(row)
            print(json.dumps(row))
            print(f"{mode}: latency(guided) / latency(uniform) = {head['ratio']:.3f} "
                  f"({'faster' if head['ratio'] < 1 else 'NOT faster'}) at {params / target:.3f}x the uniform plan's "
                  f"parameters; vs the unpruned model: guided {vs_base:.3f}, uniform {uni_base:.3f}")


if __name__ == "__main__":
    main()
