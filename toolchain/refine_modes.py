"""`prune --budget B --mode auto`: joint, layer and filter pruning each meet the same measured budget, joint twice
(with the asked criterion and with Taylor scores); each kept plan's BatchNorm statistics are re-estimated, and the
one that scores best on held-out data is kept.

Why: which mode keeps the most accuracy at a latency differs by model and budget, and no solver's value can
tell: each mode's value is its own sum of importance scores. Pretrained Lite0 on Fashion-MNIST (64x64, one
epoch + two of fine-tuning, 3 seeds; bench/results/accuracy_at_latency_lite0_auto.md): at 0.7 layer pruning
(blocks only, imprinting) scored 86.47 after fine-tuning and filter pruning 81.66 (joint 83.01 on other
baselines); layer pruning cannot reach 0.5. Seed 0's candidates at 0.7, before fine-tuning, BatchNorm
re-estimated: layer 73.4, joint 44.1, filter 41.5 on the held-out images, and auto kept layer on every seed.
A pruned model's accuracy once its BatchNorm statistics are re-estimated ranks candidates much as their
fine-tuned accuracy does (EagleEye, Li et al., ECCV 2020), for one forward pass over the held-out images each.
Not always: on ResNet-20 at 0.5 (ten fine-tuning epochs) it ranked layer plans above joint's on 5 of 5 seeds,
and they fine-tuned 2.03 +- 0.57 points lower (bench/results/accuracy_at_latency_resnet20_ft10_head.md): a
shallower plan keeps more of the unpruned function, a narrower one more capacity. Hence a mode to ask for.
With `tune_batches` (the CLI's and recipes' default) each candidate is first fine-tuned briefly on the same train
images in the same order (NetAdapt's short-term fine-tune, Yang et al., ECCV 2018) and ranked on what it scores
then; the written model is the untuned one, fine-tuned afterwards as any pruned model is. With 6,400 images
(bench/results/accuracy_at_latency_resnet20_ft10_auto_tuned.md) it kept joint on 4 of 5 ResNet-20 seeds at 0.5
(83.91 +- 0.97 after fine-tuning, against 82.32 ranked before it), and still layer on every Lite0 seed at 0.7.
On ResNet-56 at 0.5 layer plans won before and after the tune and fine-tuned 1.00 +- 0.16 below joint's
(bench/results/accuracy_at_latency_resnet56_ft10_auto_tuned.md): joint stays the default mode.
Which criterion prices joint's knapsack best differs by model too: Taylor scores (first-order loss change, one
currency for a narrowed layer and a removed block) fine-tuned highest on ResNet-20 at 0.5 and 0.35 (5 of 5 seeds
ahead of Torch-Pruning at 0.5; bench/results/accuracy_at_latency_resnet20_ft10_taylor.md) and lost Lite0's head
(38% at 0.7, bench/results/accuracy_at_latency_lite0_avx512_unpruned_ft.md): held-out data tells those apart.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from graphs.atomic import atomic_dir, check_out_dir, write_json
from graphs.errors import InputError
from toolchain.refine import BudgetRequest, prune_to_budget

# candidate name -> (mode, criterion in place of the asked one); joint first: it profiles every kind of table
# entry the others read. joint-taylor prices blocks in Taylor scores too (its layer criterion is mean:taylor).
CANDIDATES = {"joint": ("joint", None), "joint-taylor": ("joint", "taylor"), "layer": ("layer", None),
              "filter": ("filter", None)}
SCORE_IMAGES = 2048  # held-out images each candidate is scored on (a top-1 to about +-1 point)
TUNE_LR = 0.01  # the short fine-tune's starting lr (the recipes' fine-tuning lr), decayed within its batches


def held_out(dataset, images: int = SCORE_IMAGES, batch_size: int = 256):
    """At most `images` of `dataset`, evenly strided (a folder sorted by class still gives every class)."""
    from torch.utils.data import DataLoader, Subset

    step = max(1, -(-len(dataset) // images))
    return DataLoader(Subset(dataset, range(0, len(dataset), step)), batch_size=batch_size)


def short_tune(module, loader, batches: int, lr: float = TUNE_LR, seed: int = 0) -> None:
    """Train `module` in place on the first `batches` batches of a seeded shuffle of `loader`'s dataset (at
    most one pass), the lr decayed within them as every fine-tune here is: the same images, in the same
    order, for every candidate."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from toolchain.train import TrainConfig, train

    order = torch.randperm(len(loader.dataset), generator=torch.Generator().manual_seed(seed))
    images = order[:batches * loader.batch_size].tolist()
    subset = DataLoader(Subset(loader.dataset, images), batch_size=loader.batch_size, shuffle=False)
    train(module, subset, None, TrainConfig(epochs=1, lr=lr, batch_size=loader.batch_size, seed=seed))
    module.cpu().eval()


def prune_best_mode(onnx_path: str, out_dir: str, request: BudgetRequest, store: str, config, score_loader,
                    progress=None, tune_loader=None, tune_batches: int = 0) -> dict:
    """Each mode pruned to `request.budget` (its `mode` is ignored); the kept plan that meets the budget
    and scores the highest top-1 on `score_loader` (held-out images) is written to `out_dir`, and its
    summary's `mode_choice` lists every candidate. Where none meets the budget, the fastest is kept.
    With `tune_batches` > 0 the score is taken after a short fine-tune on that many of `tune_loader`'s batches."""
    if request.loader is None or score_loader is None:
        raise InputError("--mode auto ranks the modes' pruned models on held-out images: it needs --data")
    if request.bn_batches < 1:
        raise InputError("--mode auto ranks models whose BatchNorm statistics are re-estimated: --bn-batches must be >= 1")
    if tune_batches < 0 or (tune_batches and tune_loader is None):
        raise InputError(f"--auto-tune-batches must be >= 0 and needs --data, got {tune_batches}")
    tune = (lambda module: short_tune(module, tune_loader, tune_batches)) if tune_batches else None
    target = check_out_dir(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=".compress-modes-", dir=target.parent))
    try:
        candidates = _candidates(onnx_path, workspace, request, store, config, score_loader, progress, tune)
        best = _choose(candidates)
        summary = {**best["summary"], "mode_choice": {"chosen": best["mode"], "candidates": [
            {k: v for k, v in c.items() if k != "summary"} for c in candidates]}}
        with atomic_dir(out_dir, start_from=workspace / best["mode"]) as tmp:
            write_json(summary, tmp / "summary.json")
        return summary
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _candidates(onnx_path, workspace: Path, request: BudgetRequest, store, config, score_loader, progress,
                tune=None) -> list[dict]:
    from toolchain.pruned_dir import load_pruned_module
    from toolchain.train import evaluate

    candidates, refusals = [], []
    for mode, asked in _requests(request).items():
        request.log(f"mode {mode}:")
        try:
            summary = prune_to_budget(onnx_path, str(workspace / mode), asked, store, config, progress)
        except InputError as exc:  # below what this mode reaches: the others may still
            refusals.append(exc)
            candidates.append({"mode": mode, "refused": str(exc)})
            request.log(f"  mode {mode} refused: {exc}")
            continue
        module = load_pruned_module(workspace / mode)
        top1 = evaluate(module, score_loader)["top1"]
        lat = summary["latency"]
        candidate = {"mode": mode, "measured": lat["measured"], "met": lat["met"], "val_top1": top1,
                     "params": summary["params"]["after"], "summary": summary}
        request.log(f"  mode {mode}: measured {lat['measured']:.3f} ({'met' if lat['met'] else 'missed'}), "
                    f"top-1 {top1:.2f} on the held-out images with re-estimated BatchNorm statistics")
        if tune is not None:  # a copy: the directory keeps the untuned weights
            tuned = copy.deepcopy(module)
            tune(tuned)
            candidate["tuned_top1"] = evaluate(tuned, score_loader)["top1"]
            request.log(f"  mode {mode}: top-1 {candidate['tuned_top1']:.2f} after the short fine-tune")
        candidates.append(candidate)
    if len(refusals) == len(candidates):
        raise refusals[0]
    return candidates


def _requests(request: BudgetRequest) -> dict[str, BudgetRequest]:
    """Each candidate's request; joint-taylor only where the asked criterion is not Taylor already."""
    asked = {}
    for name, (mode, criterion) in CANDIDATES.items():
        if criterion is not None and criterion == request.criterion:
            continue
        # a width floor bounds narrowing, which layer pruning never does
        floor = {"max_prune": 1.0, "max_prune_for": {}} if mode == "layer" else {}
        other = {"criterion": criterion, "layer_criterion": None} if criterion else {}
        asked[name] = replace(request, mode=mode, **floor, **other)
    return asked


def _choose(candidates: list[dict]) -> dict:
    """The met candidate with the highest held-out top-1 (after the short fine-tune where there was one; the
    earlier mode on a tie); the fastest if none met."""
    pruned = [c for c in candidates if "refused" not in c]
    met = [c for c in pruned if c["met"]]
    if not met:
        return min(pruned, key=lambda c: c["measured"])
    order = list(CANDIDATES)
    return max(met, key=lambda c: (c.get("tuned_top1", c["val_top1"]), -order.index(c["mode"])))
