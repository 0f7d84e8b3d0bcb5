"""From per-channel scores of torch tensors to per-unit scores of dependency groups.

A criterion scores the output channels of some parameters (a conv's filters, a BatchNorm's
gammas): {"layer1.0.conv1.weight": array over its axis-0 channels}. A group's unit (class) couples
channels of several such tensors; its score aggregates theirs. The aggregation is named:
- "sum": total importance of everything the unit removes (default: removing a residual-stream
  channel deletes a filter in every conv writing to the stream);
- "mean": average over the coupled channels;
- "max": the most important coupled channel decides.
"""
from __future__ import annotations

import numpy as np

from graphs.deps import Analysis
from graphs.errors import InputError

AGGREGATIONS = ("sum", "mean", "max")


def channel_owners(analysis: Analysis, roles=("out", "param")) -> dict[str, np.ndarray]:
    """Parameter name -> channel id of each element along its axis 0 (only axis-0 slices)."""
    owners = {}
    for sl in analysis.slices:
        if sl.axis == 0 and sl.role in roles and sl.init not in owners:
            owners[sl.init] = sl.ids
    return owners


def check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATIONS:
        raise InputError(f"unknown aggregation {aggregate!r}: known are {', '.join(AGGREGATIONS)}")


def group_scores(analysis: Analysis, per_param: dict[str, np.ndarray], aggregate: str = "sum") -> dict[str, np.ndarray]:
    """Scores per group unit (in group.classes order) from per-channel scores of named parameters.

    Parameters the analysis does not slice on axis 0 are ignored; units no scored channel reaches get 0.
    """
    check_aggregate(aggregate)
    owners = channel_owners(analysis)
    roots = analysis.roots
    totals: dict[int, list[float]] = {}
    for name, scores in per_param.items():
        ids = owners.get(name)
        scores = np.asarray(scores, dtype=np.float64).ravel()
        if ids is None or ids.size != scores.size:
            continue
        for r, v in zip(roots[ids].tolist(), scores.tolist()):
            totals.setdefault(r, []).append(v)
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[aggregate]
    return {g.id: np.array([reduce(totals[r]) if r in totals else 0.0 for r in g.classes.tolist()])
            for g in analysis.groups}


def block_parameters(analysis: Analysis, block_members: list[str]) -> list[str]:
    """Names of the output-channel parameters (conv/linear filters) inside a block's modules."""
    names = []
    for sl in analysis.slices:
        if sl.role == "out" and sl.axis == 0 and any(sl.init.startswith(m + ".") for m in block_members):
            if sl.init not in names:
                names.append(sl.init)
    return names
