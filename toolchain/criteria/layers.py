"""Layer (block) importance criteria, LayerPrune section 3; higher score = more important (keep).

Names:
- "mean:<filter criterion>" (e.g. "mean:l2" = eq. 1, "mean:taylor" = eq. 2, "mean:bn-gamma" =
  eq. 3): the mean of the filter criterion over the channels it scores inside the block's modules
  (conv/linear filters for weight criteria, BatchNorm channels for "bn-gamma"/"halp"). Each channel
  keeps its own score (no coupling over groups). Group-level criteria ("lamp", "sp-lamp",
  "random") give each of the block's filters the score of the group unit it belongs to. A block
  with nothing the criterion scores gets 0.
- "imprinting" (eq. 5-7): one pass over labelled data with forward hooks on each block's output;
  E_i = AdaptiveAvgPool(O_i, d_i), d_i = round(sqrt(N / n_i)) (N = `embedding`, 1024 by default,
  n_i the output channels), flattened and normalised to unit length; P_i[:, c] = class mean of E
  (eq. 6), normalised to unit length (imprinting); accuracy of argmax_c P_i[:, c]^T E_j (eq. 7) on
  the same data. Score = accuracy gain over the previous block in the given (topological) order;
  the first block scores its accuracy minus chance (1 / number of classes in the data).
- "ensemble:<c1>,<c2>,...": eq. 4, each block's ranks summed over the criteria (rank 1 = least
  important, ties share their average rank), so higher = more important. A component naming a
  filter criterion ("l2") means "mean:l2".
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from graphs.deps import Analysis
from graphs.errors import InputError
from toolchain.criteria.filters import (FILTER_CRITERIA, module_device, EvalMode, filter_scores, get_criterion,
                                        iterate_batches, param_scores)
from toolchain.criteria.groups import block_parameters, channel_owners


def known_layer_criteria() -> list[str]:
    return [f"mean:{c}" for c in FILTER_CRITERIA] + ["imprinting", "ensemble:<c1>,<c2>,..."]


def _unknown(name: str) -> InputError:
    return InputError(f"unknown layer criterion {name!r}: known are {', '.join(known_layer_criteria())}")


def _inside(param: str, members: list[str]) -> bool:
    return any(param.startswith(m + ".") for m in members)


def mean_scores(crit_name: str, module, analysis: Analysis, blocks, loader=None, batches: int = 8,
                seed: int = 0) -> dict[str, float]:
    """LayerPrune section 3.1: a block's importance is the mean of its filters' importance."""
    crit = get_criterion(crit_name)
    if crit.needs_data and loader is None:
        raise InputError(f"criterion {crit_name} needs data: pass --data")
    out = {}
    if crit.per_param is not None:
        per = param_scores(crit_name, module, analysis, loader, batches)
        for b in blocks:
            vals = [np.asarray(v, dtype=np.float64).ravel() for p, v in per.items() if _inside(p, b.members)]
            out[b.id] = float(np.concatenate(vals).mean()) if vals else 0.0
        return out
    units = filter_scores(crit_name, module, analysis, loader, batches, seed=seed)
    roots = analysis.roots
    where = {}  # channel root -> unit score
    for g in analysis.groups:
        for r, s in zip(np.asarray(g.classes).tolist(), units[g.id].tolist()):
            where[r] = s
    owners = channel_owners(analysis, roles=("out",))
    for b in blocks:
        vals = [where.get(r, 0.0) for p in block_parameters(analysis, b.members) if p in owners
                for r in roots[owners[p]].tolist()]
        out[b.id] = float(np.mean(vals)) if vals else 0.0
    return out


def _block_modules(module, blocks) -> dict[str, dict[str, torch.nn.Module]]:
    named = dict(module.named_modules())
    out = {}
    for b in blocks:
        mods = {m: named[m] for m in b.members if m in named}
        if not mods:
            raise InputError(f"block {b.id}: none of its modules ({', '.join(b.members)}) is in the torch model")
        out[b.id] = mods
    return out


def imprinting_accuracy(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the imprinted classifier (eq. 6-7) on the embeddings it was imprinted from."""
    e = embeddings.astype(np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    classes = np.unique(labels)
    p = np.stack([e[labels == c].mean(0) for c in classes], axis=1)  # (dim, classes)
    p = p / np.maximum(np.linalg.norm(p, axis=0, keepdims=True), 1e-12)
    pred = classes[np.argmax(e @ p, axis=1)]
    return float(np.mean(pred == labels))


def imprinting_scores(module, analysis: Analysis, blocks, loader=None, batches: int | None = 8,
                      embedding: int = 1024) -> dict[str, float]:
    """LayerPrune eq. 5-7 (see the module docstring); also returns nothing for no blocks."""
    if loader is None:
        raise InputError("criterion imprinting needs data: pass --data")
    if embedding < 1:
        raise InputError(f"embedding length must be >= 1, got {embedding}")
    blocks = list(blocks)
    if not blocks:
        return {}
    mods = _block_modules(module, blocks)
    calls: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def fn(_m, _inp, out):
            calls.setdefault(name, []).append(out[0] if isinstance(out, (tuple, list)) else out)
        return fn

    hooked = {m for ms in mods.values() for m in ms}
    named = dict(module.named_modules())
    handles = [named[m].register_forward_hook(hook(m)) for m in hooked]
    chosen: dict[str, str] = {}
    emb: dict[str, list[np.ndarray]] = {b.id: [] for b in blocks}
    labels = []
    dev = module_device(module)
    try:
        with EvalMode(module), torch.no_grad():
            for x, y in iterate_batches(loader, batches, what="criterion imprinting"):
                calls.clear()
                module(x.to(dev))
                if not chosen:  # the block's output: its last module that runs once per forward
                    for b in blocks:
                        once = [m for m in mods[b.id] if len(calls.get(m, [])) == 1]
                        if not once:
                            raise InputError(f"block {b.id}: no module of it runs exactly once per forward pass")
                        chosen[b.id] = once[-1]
                for b in blocks:
                    o = calls[chosen[b.id]][0]
                    if o.dim() == 4:
                        d = max(1, int(round(np.sqrt(embedding / o.shape[1]))))
                        o = F.adaptive_avg_pool2d(o, d)
                    emb[b.id].append(o.reshape(o.shape[0], -1).float().cpu().numpy())
                if y.dim() != 1 or y.shape[0] != x.shape[0]:
                    raise InputError(f"labels must be a 1-D tensor of {x.shape[0]} class ids, got shape {tuple(y.shape)}")
                labels.append(y.cpu().numpy())
    finally:
        for h in handles:
            h.remove()
    labels = np.concatenate(labels)
    chance = 1.0 / len(np.unique(labels))
    out, previous = {}, chance
    for b in blocks:
        acc = imprinting_accuracy(np.concatenate(emb[b.id]), labels)
        out[b.id] = acc - previous
        previous = acc
    return out


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 = least important; ties share their average rank."""
    keys = list(scores)
    v = np.array([scores[k] for k in keys], dtype=np.float64)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for val in np.unique(v):
        tie = v == val
        r[tie] = r[tie].mean()
    return dict(zip(keys, r.tolist()))


def layer_scores(name: str, module, analysis: Analysis, blocks, loader=None, batches: int = 8,
                 embedding: int = 1024, seed: int = 0) -> dict[str, float]:
    """{block id: importance}; higher = more important. `blocks` in topological order
    (as `graphs.blocks.removable_blocks` returns them)."""
    blocks = list(blocks)
    if name.startswith("mean:"):
        crit = name[len("mean:"):]
        if crit not in FILTER_CRITERIA:
            raise _unknown(name)
        return mean_scores(crit, module, analysis, blocks, loader, batches, seed)
    if name == "imprinting":
        return imprinting_scores(module, analysis, blocks, loader, batches, embedding)
    if name.startswith("ensemble:"):
        parts = [p.strip() for p in name[len("ensemble:"):].split(",") if p.strip()]
        if not parts:
            raise InputError("ensemble needs criteria: ensemble:<c1>,<c2>,...")
        total = {b.id: 0.0 for b in blocks}
        for p in parts:
            if p in FILTER_CRITERIA:
                p = "mean:" + p
            if p.startswith("ensemble:") or not (p == "imprinting" or p.startswith("mean:")):
                raise _unknown(p)
            for k, r in ranks(layer_scores(p, module, analysis, blocks, loader, batches, embedding, seed)).items():
                total[k] += r
        return total
    raise _unknown(name)
