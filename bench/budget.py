"""Does `prune --budget` hit the budget as measured? (ORT CPU, batch 1)

For each model, budget and mode: prune to the budget (tables profiled once per model in a shared
store) and print measured / target, where measured is the pruned model's latency timed interleaved
with the unpruned one. Also prints the solver time. A budget is met under the ceiling rule
(toolchain/refine.py): measured <= budget + one standard error; the summary counts those, and how
many also land within 3% below it. --table full|reduced|prior chooses the tables prune --budget
profiles (reduced: the anchors plus actively chosen entries; compare the counts of the two).
--confirm N (prune --confirm) measures the kept plan N more times; the line then shows the ratio it was
chosen on beside the fresh one, and the summary the mean gap between the two (the winner's curse) and how
many kept plans gave way to the next after a fresh figure missed.

    python bench/budget.py [--models torchvision:resnet18,torchvision:resnet50,torchvision:mobilenet_v2]
                           [--budgets 0.8,0.6,0.4] [--modes filter,layer,joint] [--store lut.sqlite]
                           [--table full|reduced|prior] [--confirm N] [--log PATH|-]

Without --store every table is measured in the run (a fresh temporary store); with --store, tables
already there (e.g. from bench/lut_accuracy.py --store) are reused, and the log's first line says so.
Writes bench/results/budget_all_models.txt (budget_<models>.txt for other --models; _reduced or
_prior appended for those tables).
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
from toolchain.refine import BudgetRequest, meets_budget, prune_to_budget  # noqa: E402
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
    parser.add_argument("--table", default="full", choices=["full", "reduced", "prior"],
                        help="the latency tables prune --budget profiles (its CLI default is reduced)")
    parser.add_argument("--confirm", type=int, default=1, help="fresh measurements of each kept plan (prune --confirm)")
    parser.add_argument("--log", default=None, help="log file (default bench/results/budget_all_models.txt; - for none)")
    args = parser.parse_args()
    name = "budget_all_models" if args.models == DEFAULT_MODELS else "budget_" + "_".join(
        m.split(":")[-1] for m in args.models.split(","))
    name += "" if args.table == "full" else f"_{args.table}"
    with logged(name, args.log):
        run(args)


def run(args) -> None:
    print(store_line(args.store))
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "lut.sqlite")
        config = resolve_round_to(ProfileConfig(runs=args.runs, table=args.table))
        rows = []
        for spec in args.models.split(","):
            path = Path(tmp) / (spec.replace(":", "_") + ".onnx")
            export_spec(spec, str(path))
            t0 = time.perf_counter()
            table = profile(str(path), store, config)
            print(f"{spec}: {args.table} table ready in {time.perf_counter() - t0:.0f} s, {table.measured} entries "
                  f"measured (base {table.base_ms:.2f} ms)")
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
                    request = BudgetRequest(budget=budget, mode=mode, criterion=args.criterion, confirm=args.confirm)
                    try:
                        lat = prune_to_budget(str(path), str(out), request, store, config)["latency"]
                        gave_way = sum(r.get("confirmed", 0) > 0 and r["attempt"] != "chosen"
                                       and not meets_budget(r, budget) for r in lat["history"])
                        row = (spec, mode, budget, lat["predicted"], lat["measured"], lat["measured"] / budget,
                               lat["met"], lat["measured_when_chosen"], gave_way)
                        print(f"{spec} {mode:6s} budget {budget:.2f}: predicted {lat['predicted']:.3f} "
                              f"measured {lat['measured']:.3f} +- {lat['measured_se']:.3f}  measured/target "
                              f"{lat['measured'] / budget:.3f}  {'met' if lat['met'] else 'MISSED'}"
                              + (f"  (chosen on {lat['measured_when_chosen']:.3f}; {gave_way} plan(s) gave way)"
                                 if lat["confirmed"] else ""))
                    except InputError as exc:
                        row = (spec, mode, budget, None, None, None, False, None, 0)
                        print(f"{spec} {mode:6s} budget {budget:.2f}: refused: {exc}")
                    rows.append(row)
        hits = [r for r in rows if r[5] is not None]
        met = sum(r[6] for r in hits)
        close = sum(r[6] and r[5] >= 0.97 for r in hits)
        print(f"\n{met} of {len(hits)} pruned models met their budget under the ceiling rule (measured <= budget + "
              f"one standard error; {close} of them also within 3% below it), {args.table} tables "
              f"({len(rows) - len(hits)} refused as unreachable)")
        if args.confirm and hits:
            gaps = [r[7] - r[4] for r in hits]
            print(f"kept plans measured afresh {args.confirm} time(s): the ratio each was chosen on was "
                  f"{sum(gaps) / len(gaps):+.4f} from its fresh figure on average (min {min(gaps):+.4f}, max "
                  f"{max(gaps):+.4f}); {sum(r[8] > 0 for r in hits)} of {len(hits)} runs had a kept plan give way")


if __name__ == "__main__":
    main()
