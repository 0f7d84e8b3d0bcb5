"""Shared helpers for the LayerPrune experiments: a cached trained baseline, output writing."""
from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere in the repo

from safetensors.torch import save_file  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from graphs.atomic import atomic_file  # noqa: E402
from toolchain.baseline import train_baseline  # noqa: E402
from toolchain.data import dataset_info, make_loader  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.train import TrainConfig, evaluate, train  # noqa: E402
from toolchain.zoo import build_model  # noqa: E402

SHAPE = (1, 3, 32, 32)


def add_baseline_args(parser, model="builtin:resnet56", epochs=3, quick_epochs=1):
    parser.add_argument("--model", default=None,
                        help=f"builtin:resnet56 | builtin:resnet20 | builtin:vgg19_bn (default {model}, --quick builtin:resnet20)")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help=f"baseline training epochs (default {epochs}, --quick {quick_epochs})")
    parser.add_argument("--train-lr", type=float, default=0.05)
    parser.add_argument("--train-subset", type=int, default=0,
                        help="train the baseline and fine-tune on the first N images of the seeded train split "
                             "(0: all of it); validation always uses the whole val split")
    parser.add_argument("--cache", default="bench/results/experiments/cache",
                        help="trained baselines are kept here, keyed by model/data/epochs/lr")
    parser.add_argument("--quick", action="store_true", help="small scale, ~2-3 minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(_epochs=(epochs, quick_epochs), _model=model)


def resolve(args) -> None:
    """Fill the scale-dependent defaults (call after parse_args)."""
    if args.model is None:
        args.model = "builtin:resnet20" if args.quick else args._model


def baseline(args, log=print) -> dict:
    """Train (or reuse) the baseline and export it; returns {"onnx", "val", "seconds"}."""
    resolve(args)
    epochs = args.train_epochs if args.train_epochs is not None else args._epochs[1 if args.quick else 0]
    subset = getattr(args, "train_subset", 0)
    key = f"{args.model}|{args.data}|{epochs}|{args.train_lr}|{args.seed}" + (f"|n{subset}" if subset else "")
    tag = args.model.split(":")[-1] + f"-{args.data}-e{epochs}-" + hashlib.sha1(key.encode()).hexdigest()[:8]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    weights, onnx_path, meta = cache / f"{tag}.safetensors", cache / f"{tag}.onnx", cache / f"{tag}.json"
    if not (weights.is_file() and onnx_path.is_file() and meta.is_file()):
        log(f"training baseline {args.model} on {args.data} for {epochs} epoch(s)...")
        t0 = time.time()
        config = TrainConfig(epochs=epochs, lr=args.train_lr, batch_size=64, seed=args.seed)
        if subset:
            result = _train_on_subset(args, config, weights)
        else:
            result = train_baseline(args.model, args.data, str(weights), config, SHAPE)
        export_spec(args.model, str(onnx_path), SHAPE, checkpoint=str(weights), num_classes=result["num_classes"])
        meta.write_text(json.dumps({"key": key, "val": result["val"], "seconds": time.time() - t0}, indent=2))
    info = json.loads(meta.read_text())
    log(f"baseline {args.model}: val top-1 {info['val']['top1']:.2f}% ({onnx_path})")
    return {"onnx": str(onnx_path), "val": info["val"], "epochs": epochs}


def train_loader(args, batch_size: int) -> DataLoader:
    """The augmented, shuffled train loader; with --train-subset, its first N images (the train split's
    indices are already a seeded shuffle, so the first N are a fair sample)."""
    loader = make_loader(args.data, SHAPE, "train", batch_size, seed=args.seed, augment=True, shuffle=True)
    subset = getattr(args, "train_subset", 0)
    if not subset or subset >= len(loader.dataset):
        return loader
    return DataLoader(Subset(loader.dataset, range(subset)), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(int(args.seed)))


def finetune(module: torch.nn.Module, args, config: TrainConfig) -> tuple[float, float]:
    """Every script's fine-tuning, the same for all rows: val top-1 before and after (--train-subset applies)."""
    val_loader = make_loader(args.data, SHAPE, "val", 256, seed=args.seed)
    before = evaluate(module, val_loader, torch.device("cpu"))["top1"]
    train(module, train_loader(args, config.batch_size), val_loader, config)
    return before, evaluate(module.cpu(), val_loader, torch.device("cpu"))["top1"]


def _train_on_subset(args, config: TrainConfig, weights: Path) -> dict:
    """toolchain.baseline.train_baseline, on train_loader's subset."""
    num_classes = dataset_info(args.data, seed=args.seed)["num_classes"]
    module = build_model(args.model, num_classes=num_classes)
    val_loader = make_loader(args.data, SHAPE, "val", 256, seed=args.seed)
    train(module, train_loader(args, config.batch_size), val_loader, config)
    module = module.cpu().eval()
    with atomic_file(weights) as tmp:  # a kill leaves no half-written baseline in the cache
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    return {"num_classes": num_classes, "val": evaluate(module, val_loader)}


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def out_paths(out: str) -> tuple[Path, Path, Path]:
    """--out X.json -> (X.json, X.png, X.md)"""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_suffix(".png"), path.with_suffix(".md")


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
