"""Latency-guided pruning vs a uniform 50% magnitude plan, at equal parameter count.

The uniform plan (`--ratio 0.5 --round-to 8`) removes half of every group's channels by L1 norm.
The latency-guided plan (joint mode, tables from this backend) is solved for tighter and tighter
budgets until it has no more parameters than the uniform one; the two pruned models are then
timed interleaved with each other. Prints latency(guided) / latency(uniform): below 1 means the
latency-guided plan is faster on the backend it was profiled on.

    python bench/vs_uniform.py [--model torchvision:resnet18] [--mode joint]
"""
import argparse
import json
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from toolchain.budget import BudgetRequest, measure_against, prune_to_budget  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.lut import ProfileConfig  # noqa: E402
from toolchain.prune import prune_to_dir, uniform_plan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--mode", default="joint")
    parser.add_argument("--criterion", default="sp-lamp")
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = args.store or str(tmp / "lut.sqlite")
        config = ProfileConfig()
        path = tmp / "model.onnx"
        export_spec(args.model, str(path))
        uniform = prune_to_dir(str(path), str(tmp / "uniform"), uniform_plan(analyze(load_model(path)), 0.5, 8))
        target_params = uniform["params"]["after"]
        uniform_ratio = measure_against(str(path), str(tmp / "uniform" / "model.onnx"), config, 60)["ratio"]
        print(f"uniform 50%: {target_params:,} params, measured latency {uniform_ratio:.3f} of the unpruned model")
        budget, guided = uniform_ratio, None
        for _ in range(8):
            request = BudgetRequest(budget=budget, mode=args.mode, criterion=args.criterion)
            guided = prune_to_budget(str(path), str(tmp / "guided"), request, store, config)
            params = guided["params"]["after"]
            print(f"  guided at budget {budget:.3f}: {params:,} params, measured {guided['latency']['measured']:.3f}")
            if params <= target_params:
                break
            budget *= 0.93
        head_to_head = measure_against(str(tmp / "uniform" / "model.onnx"), str(tmp / "guided" / "model.onnx"), config, 100)
        print(json.dumps({"model": args.model, "uniform_params": target_params, "guided_params": guided["params"]["after"],
                          "uniform_ms": head_to_head["reference_ms"], "guided_ms": head_to_head["pruned_ms"]}))
        print(f"latency(guided) / latency(uniform) = {head_to_head['ratio']:.3f} "
              f"({'faster' if head_to_head['ratio'] < 1 else 'NOT faster'} at "
              f"{guided['params']['after'] / target_params:.2f}x the uniform plan's parameters)")


if __name__ == "__main__":
    main()
