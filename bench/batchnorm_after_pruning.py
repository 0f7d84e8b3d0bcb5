"""What re-estimated BatchNorm statistics change: top-1 of a trained model pruned at uniform ratios (L1),
before any fine-tuning, with the unpruned model's statistics and with `prune --data --bn-batches N`.

The baseline is trained here (builtin:resnet20 on the first --train-subset Fashion-MNIST train images,
--train-epochs, seeded: the setting of bench/accuracy_at_latency.py's ResNet-20 rows) or given with
--onnx (a `compress export` output). top-1 on the first --test-subset test images. No latency is measured.

    python bench/batchnorm_after_pruning.py [--ratios 0.125,0.25,0.5] [--bn-batches 4,16,64]
        [--train-epochs 3] [--train-subset 10000] [--onnx MODEL] [--log PATH|-]

Writes bench/results/batchnorm_after_pruning.txt.
"""
import argparse
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
from benchlog import logged  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from toolchain.batchnorm import recalibrate_pruned_dir  # noqa: E402
from toolchain.data import load_dataset, make_loader  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.prune import prune_to_dir, uniform_plan  # noqa: E402
from toolchain.pruned_dir import load_pruned_module  # noqa: E402
from toolchain.train import TrainConfig, evaluate, train  # noqa: E402
from toolchain.zoo import build_model  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402

DATA, SHAPE = "fashion-mnist", (1, 3, 28, 28)


def trained_baseline(args, work: Path) -> Path:
    module = build_model("builtin:resnet20", num_classes=10)
    images = Subset(load_dataset(DATA, SHAPE, split="train", seed=args.seed, augment=True), range(args.train_subset))
    loader = DataLoader(images, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    train(module, loader, None, TrainConfig(epochs=args.train_epochs, lr=0.05, batch_size=128, seed=args.seed))
    weights, onnx_path = work / "baseline.safetensors", work / "baseline.onnx"
    save_file({k: v.detach().contiguous() for k, v in module.cpu().state_dict().items()}, str(weights))
    export_spec("builtin:resnet20", str(onnx_path), SHAPE, checkpoint=str(weights), num_classes=10)
    return onnx_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="0.125,0.25,0.5")
    parser.add_argument("--bn-batches", default="4,16,64", help="batches of 32 train images, one column each")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--test-subset", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--onnx", help="a trained, exported model instead of training one")
    parser.add_argument("--log")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    counts = [int(n) for n in args.bn_batches.split(",")]
    with logged("batchnorm_after_pruning", args.log), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_path = Path(args.onnx) if args.onnx else trained_baseline(args, work)
        test = DataLoader(Subset(load_dataset(DATA, SHAPE, split="test"), range(args.test_subset)), batch_size=256)
        train_batches = make_loader(DATA, SHAPE, "train", 32, seed=0, shuffle=False)  # as `prune --data` reads it
        unpruned = load_model(onnx_path)
        from toolchain.torch_source import torch_module_for

        print(f"unpruned: top-1 {evaluate(torch_module_for(unpruned)[0], test)['top1']:.2f} "
              f"({'given' if args.onnx else f'resnet20, {args.train_epochs} epochs on {args.train_subset} images, seed {args.seed}'})")
        print("\n| channels removed | unpruned statistics | " + " | ".join(f"{n} x 32 images" for n in counts) + " |")
        print("|---|---|" + "---|" * len(counts))
        analysis = analyze(unpruned)
        for ratio in ratios:
            out = work / f"r{ratio}"
            prune_to_dir(str(onnx_path), str(out), uniform_plan(analysis, ratio), analysis=analysis)
            cells = [evaluate(load_pruned_module(out), test)["top1"]]
            for n in counts:
                copy = work / f"r{ratio}-{n}"
                prune_to_dir(str(onnx_path), str(copy), uniform_plan(analysis, ratio), analysis=analysis)
                assert recalibrate_pruned_dir(copy, train_batches, n)["recalibrated"]
                cells.append(evaluate(load_pruned_module(copy), test)["top1"])
            print(f"| {ratio:.1%} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
