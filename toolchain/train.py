"""Training, fine-tuning (optionally distilled from the unpruned model) and evaluation.

The papers' fine-tuning defaults: SGD, lr 1e-3, momentum 0.9, weight decay, step decay. A
checkpoint is written after every epoch (model + optimizer + scheduler, loaded back with
weights_only=True), so an interrupted run resumes from the last finished epoch, and a finished one
can be extended with more epochs (its lr drops move to the longer run's). Under torchrun
(WORLD_SIZE > 1) the same code runs data-parallel (DDP, gloo on CPU, nccl on GPUs).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from graphs.atomic import atomic_file, write_json
from graphs.errors import InputError
from toolchain.distill import teacher_mode
from toolchain.outputs import distill_loss


@dataclass
class TrainConfig:
    epochs: int = 5
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    step_epochs: int = 0  # decay the lr x0.1 every N epochs (0: at 1/2 and 3/4 of the run)
    batch_size: int = 64
    distill: bool = False
    temperature: float = 4.0
    distill_weight: float = 0.7  # share of the loss from the teacher's soft targets
    distill_only: bool = False  # no labels: the loss is the distance to the teacher's outputs alone
    seed: int = 0


def device_for() -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")


def distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def shard(loader):
    """Under torchrun, give each process its own share of the training data (DistributedSampler)."""
    if not distributed() or not isinstance(loader, DataLoader):
        return loader
    sampler = DistributedSampler(loader.dataset, shuffle=True, seed=torch.initial_seed() % 2**31)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers)


def evaluate(module: nn.Module, loader: DataLoader, device: torch.device | None = None) -> dict:
    """top-1 and top-5 accuracy (percent) and mean cross-entropy."""
    device = device or device_for()
    module.eval().to(device)
    correct1 = correct5 = total = 0
    loss = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = module(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(dim=1).sum().item()
            total += y.numel()
    return {"top1": 100.0 * correct1 / max(1, total), "top5": 100.0 * correct5 / max(1, total),
            "loss": loss / max(1, total), "count": total}


def _loss(logits, y, teacher_logits, config: TrainConfig):
    if config.distill_only:  # labels are meaningless here (an unlabeled folder's are all 0)
        return distill_loss(logits, teacher_logits)
    if not isinstance(logits, torch.Tensor):  # detection/segmentation: no class logits to soften
        if teacher_logits is None:
            raise InputError("the model's output is not a tensor of class scores: fine-tune it with distillation")
        return distill_loss(logits, teacher_logits)
    hard = F.cross_entropy(logits, y)
    if teacher_logits is None:
        return hard
    t = config.temperature
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(teacher_logits / t, dim=1), reduction="batchmean") * t * t
    return config.distill_weight * soft + (1.0 - config.distill_weight) * hard


def train(module: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, config: TrainConfig,
          checkpoint_dir: str | Path | None = None, teacher: nn.Module | None = None,
          on_epoch: Callable[[int, dict], None] | None = None, progress=None,
          score: Callable[[nn.Module], dict] | None = None) -> list[dict]:
    """Train in place; returns the per-epoch history (train loss, and on `val_loader` top-1/top-5 or,
    given `score`, what it measures)."""
    torch.manual_seed(config.seed)
    device = device_for()
    if distributed() and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    module.to(device)
    model = nn.parallel.DistributedDataParallel(module) if distributed() else module
    train_loader = shard(train_loader)
    if config.distill_only and teacher is None:
        raise InputError("distillation without labels needs the unpruned model as the teacher")
    if teacher is not None:
        teacher.to(device)
    optimizer = torch.optim.SGD(module.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    milestones = lr_milestones(config, _steps_per_epoch(train_loader) or 1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    history, start = [], 0
    checkpoint = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _move_milestones(scheduler, milestones)
        history, start = json.loads(state["history"]), int(state["epoch"]) + 1
    for epoch in range(start, config.epochs):
        seed_epoch(train_loader, config.seed, epoch)
        if isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        total, seen = _train_epoch(model, train_loader, optimizer, scheduler, config, epoch, device, teacher, progress)
        record = {"epoch": epoch, "train_loss": total / max(1, seen), "lr": optimizer.param_groups[0]["lr"]}
        if val_loader is not None or score is not None:
            measured = score(module) if score is not None else evaluate(module, val_loader, device)
            record.update({f"val_{k}": v for k, v in measured.items() if k != "count"})
        history.append(record)
        if checkpoint is not None and _rank() == 0:
            _save_checkpoint(checkpoint, module, optimizer, scheduler, epoch, history)
        if on_epoch is not None:
            on_epoch(epoch, record)
    return history


def _steps_per_epoch(loader) -> int | None:
    """Batches per epoch, or None for a loader without a length (its schedule then counts epochs)."""
    try:
        return max(1, len(loader))
    except TypeError:
        return None


def _move_milestones(scheduler, milestones: list[int]) -> None:
    """Give a resumed scheduler this run's lr drops. A checkpoint of a run of another length (a
    finished 4-epoch fine-tune extended to 8) holds that run's drops, all already passed: the extension
    would train at lr x0.01 throughout. The lr becomes what this run's schedule has at the step reached."""
    if sorted(scheduler.milestones.elements()) == milestones:
        return
    scheduler.milestones = Counter(milestones)
    drops = sum(1 for m in milestones if m <= scheduler.last_epoch)
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * scheduler.gamma ** drops
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def lr_milestones(config: TrainConfig, steps_per_epoch: int) -> list[int]:
    """The optimizer steps after which the lr drops x0.1. Counted in steps, not epochs, so a one- or
    two-epoch fine-tune decays at 1/2 and 3/4 of its batches as documented (per epoch it never could)."""
    total = config.epochs * steps_per_epoch
    if config.step_epochs:
        return list(range(config.step_epochs * steps_per_epoch, total, config.step_epochs * steps_per_epoch))
    return sorted({max(1, total // 2), max(1, 3 * total // 4)})


def _train_epoch(model, loader, optimizer, scheduler, config: TrainConfig, epoch: int, device, teacher, progress):
    """One pass over `loader`, stepping the lr schedule per batch; returns (summed loss x samples, samples)."""
    model.train()
    if teacher is not None:  # each epoch: a val score may have left it in eval mode
        teacher_mode(teacher)
    total, seen = 0.0, 0
    per_batch = _steps_per_epoch(loader) is not None
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            soft = teacher(x) if teacher is not None and (config.distill or config.distill_only) else None
        loss = _loss(model(x), y, soft, config)
        if not torch.isfinite(loss):  # diverged: stop before NaN weights reach a checkpoint
            raise FloatingPointError(f"the training loss became {loss.item()} in epoch {epoch}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if per_batch:
            scheduler.step()
        total += loss.item() * y.numel()
        seen += y.numel()
        if progress is not None:
            progress(epoch, seen)
    if not per_batch:
        scheduler.step()
    return total, seen


def seed_epoch(loader, seed: int, epoch: int) -> None:
    """Make an epoch's shuffle and augmentation a function of (seed, epoch) alone, so a run resumed from
    a checkpoint sees the batches the uninterrupted run saw and ends with the same weights (the
    augmentation draws from torch's global RNG, the shuffle from the loader's generator)."""
    torch.manual_seed(seed + epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed + epoch)


def _save_checkpoint(path: Path, module, optimizer, scheduler, epoch: int, history: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "history": json.dumps(history)}, tmp)


def write_history(path: str | Path, config: TrainConfig, history: list, extra: dict) -> None:
    write_json({"config": asdict(config), "history": history, **extra}, path)
