"""The LAMP criteria's building blocks (criteria "lamp" and "sp-lamp" are registered in filters.py):
LAMP's normalisation, the next layer's input-channel norms (SP-LAMP eq. 2's second factor), and
which filters form one layer."""
from __future__ import annotations

import numpy as np

from toolchain.criteria.groups import channel_owners


def lamp_normalise(v: np.ndarray) -> np.ndarray:
    """LAMP eq. 1 within one layer's filters: sorted ascending, score(u) = v_u / sum_{v >= u} v_v.

    The largest unit scores exactly 1 (also when every v is 0); ties keep channel order (a stable
    sort), so among equal values the later channel counts as the larger.
    """
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    tail = np.cumsum(sorted_v[::-1])[::-1]  # sum over v >= u
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(tail > 0, sorted_v / np.where(tail > 0, tail, 1.0), 0.0)
    s[-1] = 1.0
    out = np.empty_like(s)
    out[order] = s
    return out


def depthwise_weights(analysis) -> set[str]:
    """Weights of depthwise convs: each output channel continues one input channel (graphs/rules.py)."""
    nodes = {fix.node for fix in analysis.fixes if fix.kind == "conv_groups"}
    return {sl.init for sl in analysis.slices if sl.role == "out" and sl.node in nodes}


def fold_depthwise(analysis, norms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-layer squared filter norms (`norms`: {weight: one per filter}) with depthwise convs folded in.

    A depthwise conv continues the feature its input channel carries rather than starting one, so
    where a single conv produces that channel (an inverted residual's expansion) the depthwise
    filter's norm joins that conv's, one layer. Counted apart, every expansion unit weighed two layers
    and Lite0's 1280-wide head, one layer, was cut to 80 channels at budget 0.35. A depthwise conv
    reading a stream that several convs write stays a layer of its own."""
    owners = channel_owners(analysis)
    depthwise = depthwise_weights(analysis) & set(norms)
    producers: dict[int, list[tuple[str, int]]] = {}  # channel root -> (non-depthwise layer, its filter index)
    for name in norms.keys() - depthwise:
        if name in owners:
            for j, r in enumerate(analysis.roots[owners[name]].tolist()):
                producers.setdefault(r, []).append((name, j))
    out = {name: v.copy() for name, v in norms.items() if name not in depthwise}
    for name in sorted(depthwise):
        roots = analysis.roots[owners[name]].tolist() if name in owners else []
        if not roots or any(len(producers.get(r, [])) != 1 for r in roots):
            out[name] = norms[name]
            continue
        for r, v in zip(roots, norms[name].tolist()):
            layer, j = producers[r][0]
            out[layer][j] += v
    return out


def consumer_norms(module, analysis) -> tuple[dict[int, float], set[int]]:
    """Channel root -> summed squared norm of every consumer input-channel ("in") slice reading it."""
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    roots = analysis.roots
    total: dict[int, float] = {}
    seen = set()
    for sl in analysis.slices:
        if sl.role != "in" or (sl.init, sl.axis) in seen:
            continue
        seen.add((sl.init, sl.axis))
        w = params.get(sl.init, buffers.get(sl.init))
        if w is None or sl.axis >= w.dim() or w.shape[sl.axis] != len(sl.ids):
            continue
        per = w.detach().double().transpose(0, sl.axis).reshape(w.shape[sl.axis], -1).pow(2).sum(1).cpu().numpy()
        for r, v in zip(roots[np.asarray(sl.ids)].tolist(), per.tolist()):
            total[r] = total.get(r, 0.0) + v
    return total, set(total)
