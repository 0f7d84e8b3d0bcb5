"""Train a model from scratch on real data: the baseline that pruning starts from."""
from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file

from graphs.atomic import atomic_file
from graphs.errors import InputError

from toolchain.data import dataset_info, make_loader
from toolchain.train import TrainConfig, evaluate, train
from toolchain.zoo import build_model, default_input_shape


def train_baseline(spec: str, data: str, output: str, config: TrainConfig, input_shape=None, on_epoch=None,
                   normalize: str = "auto") -> dict:
    out = Path(output)
    try:  # before training: an unwritable output is refused before an epoch is spent
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{output}: cannot write there ({exc.strerror})") from None
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        raise InputError(f"{output}: cannot write there")
    info = dataset_info(data, seed=config.seed)
    shape = tuple(input_shape or default_input_shape(spec))
    module = build_model(spec, num_classes=info["num_classes"])
    train_loader = make_loader(data, shape, "train", config.batch_size, seed=config.seed, augment=True, shuffle=True,
                               normalize=normalize)
    val_loader = make_loader(data, shape, "val", 256, seed=config.seed, normalize=normalize)
    history = train(module, train_loader, val_loader, config, on_epoch=on_epoch)
    module = module.cpu().eval()
    metrics = evaluate(module, val_loader)
    with atomic_file(out) as tmp:
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp),
                  metadata={"spec": spec, "data": data, "num_classes": str(info["num_classes"])})
    return {"spec": spec, "data": data, "num_classes": info["num_classes"], "val": metrics, "history": history}
