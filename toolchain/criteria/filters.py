"""Filter (channel) importance criteria, registered by name; higher score = more important.

Each criterion scores channels of named torch parameters along axis 0 ({"conv.weight": one score
per filter}, {"bn.weight": one per BatchNorm channel}); `group_scores` then turns these into one
score per unit of each dependency group with a named aggregation ("sum" / "mean" / "max").
Group-level criteria (LAMP, SP-LAMP, random) score the units directly.

Criteria (LayerPrune section 3.1, SP-LAMP section 3.1 and appendix D):
- "l1", "l2": L1 / L2 norm of each filter (LayerPrune eq. 1 uses L2);
- "taylor": Taylor on weights in LayerPrune eq. 2 form, ||G (.) W||_2 per filter, i.e. the square
  root of Molchanov's sum_s (g_s w_s)^2; over B batches sqrt(mean_b sum_s (g_{b,s} w_s)^2) (the
  per-batch squared terms are averaged, as Molchanov accumulates them), loss = cross-entropy;
- "taylor-fm": Taylor on feature maps, per conv/linear output channel |mean_n sum_{h,w} a dL/da|,
  averaged over batches;
- "bn-gamma": gamma^2 of each BatchNorm channel (LayerPrune eq. 3);
- "halp": |g_gamma gamma + g_beta beta| per BatchNorm channel (HALP, SP-LAMP eq. 27), averaged
  over batches;
- "lamp": LAMP eq. 1 per layer: v_{l,u} = ||W_{l,u}||^2, sorted ascending within layer l,
  score(u, l) = v_{l,u} / sum_{v >= u} v_{l,v} (each layer's largest filter scores 1);
- "sp-lamp": SP-LAMP eq. 2 per layer: v_{l,u} = ||W_{l,u}||^2 x ||W^_{l+1,u}||^2 (the filter's
  squared norm times the summed squared norm of every consumer input-channel slice reading unit u),
  eq. 3 (first factor only) where no consumer reads it; then the LAMP normalisation within layer l.
  Both then aggregate over the layers a unit couples (sum by default): SP-LAMP eq. 5 sums the kept
  units' scores over *layers*, and a residual-stream unit keeps or removes a filter in every conv
  writing to the stream, so it counts once per such layer. (Normalising per group instead gave a
  stream coupling nine convs the value of one, and the joint knapsack cut stage-3 streams of
  ResNet-56 from 64 to 16 channels.) A depthwise conv is not a layer of its own here: its filter's
  norm joins the conv that produces its input channel (toolchain/criteria/lamp.py).
- "taylor-lamp": the squared Taylor score (Molchanov's sum_s (g_s w_s)^2) in place of the squared
  norm, then folded and LAMP-normalised per layer and summed per unit like sp-lamp: raw Taylor
  scores are not comparable across layers (they shrink with depth and width);
- "random": seeded uniform per unit.

Gradient criteria run the module in eval mode (BatchNorm running statistics are not touched) and
use `torch.autograd.grad`, so parameters' `.grad` are left as they were.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from graphs.deps import Analysis
from graphs.errors import InputError
from toolchain.criteria.groups import channel_owners, check_aggregate, group_scores
from toolchain.criteria.lamp import consumer_norms, fold_depthwise, lamp_normalise


@dataclass
class Criterion:
    name: str
    doc: str
    needs_data: bool = False
    per_param: Callable | None = None  # (module, analysis, loader, batches) -> {param: scores along axis 0}
    per_group: Callable | None = None  # (module, analysis, loader, batches, aggregate, seed) -> {group: scores}


FILTER_CRITERIA: dict[str, Criterion] = {}


def register(name: str, doc: str, needs_data: bool = False, group_level: bool = False):
    def deco(fn):
        FILTER_CRITERIA[name] = Criterion(name, doc, needs_data, None if group_level else fn,
                                          fn if group_level else None)
        return fn
    return deco


def known_filter_criteria() -> list[str]:
    return list(FILTER_CRITERIA)


def get_criterion(name: str) -> Criterion:
    if name not in FILTER_CRITERIA:
        raise InputError(f"unknown filter criterion {name!r}: known are {', '.join(FILTER_CRITERIA)}")
    return FILTER_CRITERIA[name]


# ----------------------------------------------------------------------------------------------
# helpers


def out_params(analysis: Analysis) -> list[str]:
    """Conv/linear weights whose filters (axis 0) are producer channels, in graph order."""
    names = []
    for sl in analysis.slices:
        if sl.role == "out" and sl.axis == 0 and sl.init not in names:
            names.append(sl.init)
    return names


def _named_params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters())


def _weight_tensors(module: torch.nn.Module, analysis: Analysis) -> dict[str, torch.Tensor]:
    params = _named_params(module)
    return {n: params[n] for n in out_params(analysis) if n in params}


def _batchnorms(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.weight is not None}


def iterate_batches(loader, batches: int | None, need_labels: bool = True, what: str = "criterion"):
    """(x, y) of the first `batches` batches (all when None), on the module's device by the caller."""
    if loader is None:
        raise InputError(f"{what} needs data: pass --data")
    if batches is not None and batches < 1:
        raise InputError(f"batches must be >= 1, got {batches}")
    count = 0
    for item in loader:
        if batches is not None and count >= batches:
            break
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            x, y = item[0], item[1]
        elif need_labels:
            raise InputError(f"{what} needs labelled data: the loader must yield (images, labels)")
        else:
            x, y = (item[0] if isinstance(item, (tuple, list)) else item), None
        if not torch.is_tensor(x) or (y is not None and not torch.is_tensor(y)):
            raise InputError(f"{what}: the loader must yield tensors (images, labels)")
        count += 1
        yield x, y
    if count == 0:
        raise InputError(f"{what}: the data loader yielded no batches")


def module_device(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


class EvalMode:
    """Eval mode (and, with grad=True, every parameter requiring grad) for the duration; restored after."""

    def __init__(self, module, grad: bool = False):
        self.module, self.grad = module, grad

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()
        self.frozen = [p for p in self.module.parameters() if not p.requires_grad] if self.grad else []
        for p in self.frozen:
            p.requires_grad_(True)
        return self.module

    def __exit__(self, *exc):
        for p in self.frozen:
            p.requires_grad_(False)
        self.module.train(self.was_training)


def _loss(module, x, y):
    out = module(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() != 2:
        raise InputError(f"the model's output has shape {tuple(out.shape)}, a cross-entropy loss needs (N, classes)")
    if y.dim() != 1 or y.shape[0] != out.shape[0]:
        raise InputError(f"labels must be a 1-D tensor of {out.shape[0]} class ids, got shape {tuple(y.shape)}")
    return F.cross_entropy(out, y.long())


def _gradient_passes(module, loader, batches, tensors: list[torch.Tensor], name: str):
    """Yield the gradients of the cross-entropy loss w.r.t. `tensors`, one list per batch."""
    dev = module_device(module)
    with EvalMode(module, grad=True), torch.enable_grad():
        for x, y in iterate_batches(loader, batches, what=f"criterion {name}"):
            x, y = x.to(dev), y.to(dev)
            loss = _loss(module, x, y)
            yield torch.autograd.grad(loss, tensors, allow_unused=True)


def _filter_norms(module, analysis, p: int) -> dict[str, np.ndarray]:
    out = {}
    for name, w in _weight_tensors(module, analysis).items():
        flat = w.detach().reshape(w.shape[0], -1).double()
        out[name] = flat.abs().sum(1).cpu().numpy() if p == 1 else flat.pow(2).sum(1).sqrt().cpu().numpy()
    return out


@register("l1", "L1 norm of each filter")
def _l1(module, analysis, loader=None, batches=8):
    return _filter_norms(module, analysis, 1)


@register("l2", "L2 norm of each filter (LayerPrune eq. 1)")
def _l2(module, analysis, loader=None, batches=8):
    return _filter_norms(module, analysis, 2)


@register("taylor", "||G (.) W||_2 per filter, Taylor on weights (LayerPrune eq. 2)", needs_data=True)
def _taylor(module, analysis, loader=None, batches=8):
    weights = _weight_tensors(module, analysis)
    names, tensors = list(weights), list(weights.values())
    acc = {n: torch.zeros(weights[n].shape[0], dtype=torch.float64) for n in names}
    count = 0
    for grads in _gradient_passes(module, loader, batches, tensors, "taylor"):
        count += 1
        for n, w, g in zip(names, tensors, grads):
            if g is not None:
                acc[n] += (g.detach() * w.detach()).reshape(w.shape[0], -1).double().pow(2).sum(1).cpu()
    return {n: (acc[n] / count).sqrt().numpy() for n in names}


@register("taylor-fm", "|mean_n sum_hw a dL/da| per output channel, Taylor on feature maps", needs_data=True)
def _taylor_fm(module, analysis, loader=None, batches=8):
    wanted = {n[: -len(".weight")]: n for n in out_params(analysis) if n.endswith(".weight")}
    modules = {name: m for name, m in module.named_modules() if name in wanted}
    captured: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def fn(_m, _inp, out):
            if torch.is_tensor(out) and out.requires_grad:
                captured.setdefault(name, []).append(out)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    acc: dict[str, torch.Tensor] = {}
    count = 0
    dev = module_device(module)
    try:
        with EvalMode(module, grad=True), torch.enable_grad():
            for x, y in iterate_batches(loader, batches, what="criterion taylor-fm"):
                captured.clear()
                loss = _loss(module, x.to(dev), y.to(dev))
                names = [n for n in captured]
                acts = [a for n in names for a in captured[n]]
                grads = torch.autograd.grad(loss, acts, allow_unused=True)
                count += 1
                k = 0
                for n in names:
                    per_call = []
                    for a in captured[n]:
                        g = grads[k]
                        k += 1
                        if g is None:
                            g = torch.zeros_like(a)
                        prod = (a.detach() * g).double()
                        # (N, C, ...) -> sum over spatial positions, mean over the batch
                        s = prod.reshape(prod.shape[0], prod.shape[1], -1).sum(2).mean(0).abs()
                        per_call.append(s.cpu())
                    total = torch.stack(per_call).sum(0)
                    acc[n] = acc.get(n, 0) + total
    finally:
        for h in handles:
            h.remove()
    return {wanted[n]: (v / count).numpy() for n, v in acc.items()}


@register("bn-gamma", "gamma^2 of each BatchNorm channel (LayerPrune eq. 3)")
def _bn_gamma(module, analysis, loader=None, batches=8):
    return {f"{n}.weight": m.weight.detach().double().pow(2).cpu().numpy() for n, m in _batchnorms(module).items()}


@register("halp", "|g_gamma gamma + g_beta beta| per BatchNorm channel (HALP)", needs_data=True)
def _halp(module, analysis, loader=None, batches=8):
    bns = {n: m for n, m in _batchnorms(module).items() if m.bias is not None}
    names = list(bns)
    tensors = [t for n in names for t in (bns[n].weight, bns[n].bias)]
    acc = {n: torch.zeros(bns[n].weight.shape[0], dtype=torch.float64) for n in names}
    count = 0
    for grads in _gradient_passes(module, loader, batches, tensors, "halp"):
        count += 1
        for i, n in enumerate(names):
            gg, gb = grads[2 * i], grads[2 * i + 1]
            gg = torch.zeros_like(bns[n].weight) if gg is None else gg
            gb = torch.zeros_like(bns[n].bias) if gb is None else gb
            acc[n] += (gg * bns[n].weight + gb * bns[n].bias).detach().double().abs().cpu()
    return {f"{n}.weight": (acc[n] / count).numpy() for n in names}


# ----------------------------------------------------------------------------------------------
# group-level criteria


def _squared_filter_norms(module, analysis):
    return {n: v ** 2 for n, v in _filter_norms(module, analysis, 2).items()}


def _layer_norms(module, analysis) -> dict[str, np.ndarray]:
    """Squared filter norms per layer for the LAMP criteria (toolchain/criteria/lamp.py: depthwise folding)."""
    return fold_depthwise(analysis, _squared_filter_norms(module, analysis))


def _lamp_per_layer(analysis, values: dict[str, np.ndarray], aggregate: str) -> dict[str, np.ndarray]:
    """LAMP-normalise each layer's per-filter values, then aggregate them per group unit."""
    return group_scores(analysis, {name: lamp_normalise(v) for name, v in values.items()}, aggregate)


@register("lamp", "LAMP eq. 1 on squared filter norms, normalised within each layer, summed per unit", group_level=True)
def _lamp(module, analysis, loader=None, batches=8, aggregate="sum", seed=0):
    return _lamp_per_layer(analysis, _layer_norms(module, analysis), aggregate)


def sp_lamp_values(module, analysis) -> dict[str, np.ndarray]:
    """SP-LAMP's v_{l,u} per layer (conv/linear weight) and filter, before the normalisation: eq. 2's
    numerator, or eq. 3's where no consumer reads the filter's channel."""
    second, has_consumer = consumer_norms(module, analysis)
    owners = channel_owners(analysis)
    out = {}
    for name, first in _layer_norms(module, analysis).items():
        ids = owners.get(name)
        if ids is None or ids.size != first.size:
            continue
        roots = analysis.roots[ids].tolist()
        out[name] = np.array([f * second[r] if r in has_consumer else f for f, r in zip(first.tolist(), roots)])
    return out


@register("sp-lamp", "SP-LAMP eq. 2-3: filter x next-layer input-channel norms, normalised within each layer, "
          "summed per unit", group_level=True)
def _sp_lamp(module, analysis, loader=None, batches=8, aggregate="sum", seed=0):
    return _lamp_per_layer(analysis, sp_lamp_values(module, analysis), aggregate)


@register("taylor-lamp", "Taylor on weights squared (sum_s (g_s w_s)^2), normalised within each layer as LAMP, "
          "summed per unit", needs_data=True, group_level=True)
def _taylor_lamp(module, analysis, loader=None, batches=8, aggregate="sum", seed=0):
    # Raw Taylor scores shrink with depth and width (Lite0: a stem unit 0.84, a conv_head unit 0.001),
    # so a knapsack summing them across layers cut Lite0's 1280-wide head to 16 channels. Ranked within
    # each layer, as SP-LAMP is, the data-driven loss estimate keeps its order and loses the scale.
    squared = {n: v ** 2 for n, v in _taylor(module, analysis, loader, batches).items()}
    return _lamp_per_layer(analysis, fold_depthwise(analysis, squared), aggregate)


@register("random", "seeded uniform scores per unit", group_level=True)
def _random(module, analysis, loader=None, batches=8, aggregate="sum", seed=0):
    rng = np.random.default_rng(seed)
    return {g.id: rng.random(len(g.classes)) for g in analysis.groups}


# ----------------------------------------------------------------------------------------------
# API


def param_scores(name: str, module, analysis: Analysis, loader=None, batches: int = 8) -> dict[str, np.ndarray]:
    """Per-parameter per-channel scores of a per-parameter criterion (not lamp / sp-lamp / random)."""
    crit = get_criterion(name)
    if crit.per_param is None:
        raise InputError(f"criterion {name} scores group units, not parameters")
    if crit.needs_data and loader is None:
        raise InputError(f"criterion {name} needs data: pass --data")
    return crit.per_param(module, analysis, loader, batches)


def filter_scores(name: str, module: torch.nn.Module, analysis: Analysis, loader=None, batches: int = 8,
                  aggregate: str = "sum", seed: int = 0) -> dict[str, np.ndarray]:
    """{group id: score per unit (group.classes order)}; higher = more important."""
    crit = get_criterion(name)
    check_aggregate(aggregate)
    if crit.needs_data and loader is None:
        raise InputError(f"criterion {name} needs data: pass --data")
    if crit.per_group is not None:
        return crit.per_group(module, analysis, loader, batches, aggregate, seed)
    return group_scores(analysis, crit.per_param(module, analysis, loader, batches), aggregate)
