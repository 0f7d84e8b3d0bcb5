"""Does training in the profiling process offset a latency table? The control entry's two readings tell.

The accuracy bench profiles each seed's table in the process that just fine-tuned the previous seed's
rows, and one such table's control read 0.964 while its entries were not offset
(`bench/results/table_control_replay.txt`). This script does what the bench does before that table:
fine-tunes a pretrained Lite0 on --images Fashion-MNIST images (64x64) for one epoch in this process,
then profiles MODEL into a new store (`--points 4 --runs 25`, as the bench) and prints the control
entry's readings before and after the session's entries (toolchain/latency/control.py) and, given
--other STORE (the same model profiled in a fresh process), the median of the entries' differences.

    python bench/control_after_training.py W/pretrained-efficientnet_lite0-s1-te1-n10000-sNone.onnx \
        [--other S] [--images 10000] [--log PATH|-]

Writes bench/results/control_after_training.txt by default. Run it alone: it is a timing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_at_latency import loader  # noqa: E402
from benchlog import logged  # noqa: E402
from table_offset_replay import entries  # noqa: E402
from toolchain.latency.config import ProfileConfig  # noqa: E402
from toolchain.latency.lut import profile  # noqa: E402
from toolchain.train import TrainConfig, train  # noqa: E402
from toolchain.zoo import build_model  # noqa: E402


def run(args) -> None:
    start = time.time()
    module = build_model("pretrained:efficientnet_lite0", num_classes=10)
    train(module, loader((1, 3, 64, 64), "train", 1, args.images, 128, True), None,
          TrainConfig(epochs=1, lr=0.01, batch_size=128, seed=1))
    print(f"fine-tuned a Lite0 for 1 epoch on {args.images} images in this process: {time.time() - start:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "table.sqlite")
        table = profile(args.model, store, ProfileConfig(points=4, runs=25))
        control = table.control
        print(f"control before the entries {control.ratio:.4f} +- {control.se:.4f}, after them "
              f"{control.end.ratio:.4f} +- {control.end.se:.4f}: steady {control.steady}, applied {control.applied}")
        print(f"warning: {table.control_warning}")
        if args.other:
            mine, other = entries(store), entries(args.other)
            diffs = [mine[k] - other[k] for k in set(mine) & set(other)]
            print(f"{len(diffs)} entries minus the other process's (both as stored): median "
                  f"{statistics.median(diffs):+.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Lite0 baseline ONNX from the accuracy bench's --work folder")
    parser.add_argument("--other", help="the same model's table, profiled in a fresh process")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--log", default=None, help="log file (default bench/results/control_after_training.txt; - for none)")
    args = parser.parse_args()
    with logged("control_after_training", args.log):
        run(args)


if __name__ == "__main__":
    main()
