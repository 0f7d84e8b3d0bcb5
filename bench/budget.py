"""Does `prune --budget` hit the budget as measured? (ORT CPU, batch 1)

For each model, budget and mode: prune to the budget (tables profiled once per model in a shared
store) and print measured / target, where measured is the pruned model's latency timed interleaved
with the unpruned one. Also prints the solver time. Goal: measured within +-3% of the budget.

    python bench/budget.py [--models torchvision:resnet18,torchvision:resnet50,torchvision:mobilenet_v2]
                           [--budgets 0.8,0.6,0.4] [--modes filter,layer,joint] [--store lut.sqlite]
                           [--log PATH|-]

Without --store every table is measured in the run (a fresh temporary store); with --store, tables
already there (e.g. from bench/lut_accuracy.py --store) are reused, and the log's first line says so.
Writes bench/results/budget_all_models.txt (budget_<models>.txt for other --models).
"""
import argparse
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
from graphs.deps import analyze  # noqa: E402
from graphs.errors import InputError  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from toolchain.refine import BudgetRequest, prune_to_budget  # noqa: E402
from toolchain.criteria import filter_scores  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.config import ProfileConfig, resolve_round_to  # noqa: E402
from toolchain.latency.lut import profile  # noqa: E402
from toolchain.torch_source import torch_module_for  # noqa: E402
from toolchain.solve.budget import solve_joint  # noqa: E402
from benchlog import logged, store_line  # noqa: E402

DEFAULT_MODELS = "torchvision:resnet18,torchvision:resnet50,torchvision:mobilenet_v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--budgets", default="0.8,0.6,0.4")
    parser.add_argument("--modes", default="filter,layer,joint")
    parser.add_argument("--criterion", default="sp-lamp")
    parser.add_argument("--store", default=None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--log", default=None, help="log file (default bench/results/budget_all_models.txt; - for none)")
    args = parser.parse_args()
    name = "budget_all_models" if args.models == DEFAULT_MODELS else "budget_" + "_".join(
        m.split(":")[-1] for m in args.models.split(","))
    with logged(name, args.log):
        run(args)


def run(args) -> None:
    print(store_line(args.store))
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "lut.sqlite")
        config = resolve_round_to(ProfileConfig(runs=args.runs))
        rows = []
        for spec in args.models.split(","):
            path = Path(tmp) / (spec.replace(":", "_") + ".onnx")
            export_spec(spec, str(path))
            t0 = time.perf_counter()
            table = profile(str(path), store, config)
            print(f"{spec}: table ready in {time.perf_counter() - t0:.0f} s (base {table.base_ms:.2f} ms)")
            model = load_model(path)
            analysis = analyze(model)
            blocks = analysis.blocks
            scores = filter_scores(args.criterion, torch_module_for(model)[0], analysis)
            t0 = time.perf_counter()
            solve_joint(analysis, table, blocks, scores, 0.6, config.round_to, args.criterion)
            print(f"{spec}: joint solver time {time.perf_counter() - t0:.2f} s (goal < 1 s)")
            for budget in map(float, args.budgets.split(",")):
                for mode in args.modes.split(","):
                    out = Path(tmp) / f"{path.stem}-{mode}-{budget}"
                    request = BudgetRequest(budget=budget, mode=mode, criterion=args.criterion)
                    try:
                        lat = prune_to_budget(str(path), str(out), request, store, config)["latency"]
                        row = (spec, mode, budget, lat["predicted"], lat["measured"], lat["measured"] / budget)
                        print(f"{spec} {mode:6s} budget {budget:.2f}: predicted {lat['predicted']:.3f} "
                              f"measured {lat['measured']:.3f}  measured/target {lat['measured'] / budget:.3f}")
                    except InputError as exc:
                        row = (spec, mode, budget, None, None, None)
                        print(f"{spec} {mode:6s} budget {budget:.2f}: refused: {exc}")
                    rows.append(row)
        hits = [r for r in rows if r[5] is not None]
        within = sum(abs(r[5] - 1.0) <= 0.03 for r in hits)
        print(f"\n{within} of {len(hits)} pruned models measured within +-3% of their budget "
              f"({len(rows) - len(hits)} refused as unreachable)")


if __name__ == "__main__":
    main()
