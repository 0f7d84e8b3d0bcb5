"""Per dependency group: how many units, and the sum and mean of their scores under some criteria.

A knapsack that sums unit scores across layers (the filter and joint solvers) needs scores on one scale.
This prints each prunable group's scores under each criterion, for a trained model's ONNX and
Fashion-MNIST images at the model's input size (the criteria's loader of bench/accuracy_at_latency.py:
512 training images, 8 batches of 64).

    python bench/criteria_scale.py ONNX [--criteria taylor,taylor-lamp,sp-lamp] [--seed 0] [--log PATH|-]

Writes bench/results/criteria_scale.txt by default.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlog import logged  # noqa: E402
import accuracy_at_latency as bench  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from toolchain.criteria import filter_scores  # noqa: E402
from toolchain.torch_source import torch_module_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx")
    parser.add_argument("--criteria", default="taylor,taylor-lamp,sp-lamp")
    parser.add_argument("--seed", type=int, default=0, help="the seeded train split the images come from")
    parser.add_argument("--log", default=None, help="log file (default bench/results/criteria_scale.txt; - for none)")
    args = parser.parse_args()
    model = load_model(args.onnx)
    module, _ = torch_module_for(model)
    analysis = analyze(model)
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    criteria = args.criteria.split(",")
    with logged("criteria_scale", args.log):
        scores = {c: filter_scores(c, module, analysis, bench.loader(shape, "train", args.seed, 512, 64, False), 8)
                  for c in criteria}
        print(f"{Path(args.onnx).name}: per prunable group, units and the sum / mean of their scores")
        print(f"| group | units | {' | '.join(f'{c} sum / mean' for c in criteria)} |")
        print(f"|---|---|{'---|' * len(criteria)}")
        for g in analysis.groups:
            if g.prunable:
                cells = " | ".join(f"{scores[c][g.id].sum():.3g} / {scores[c][g.id].mean():.3g}" for c in criteria)
                print(f"| {g.id} | {len(g.classes)} | {cells} |")


if __name__ == "__main__":
    main()
