"""What a plan keeps, in the solver's own currency: how `prune --budget` tells which of the plans that met
a budget is the least pruned.

Parameters once ranked them, and in joint mode that picked the wrong plan: removing a block of the
first stage (16 channels, few parameters) keeps more parameters than narrowing the last stage, so a plan
solved for a tighter target (ResNet-20 on Fashion-MNIST, budget 0.5: measured 0.419) beat one solved for a
looser one that also met the budget (0.493), wasting 0.07 of it. The value below is what the knapsack
maximises (solve/budget.py), computed for any plan (between-plans included), so the plans rank as the
solver ranked them: the importance of the units a plan keeps, less what its removed blocks cost in the
residual streams they write to; in layer mode, minus the importance of the blocks it removes.
"""
from __future__ import annotations

import numpy as np

from graphs.blocks import Block
from graphs.deps import Analysis
from toolchain.solve.budget import Decision, inner_groups, outside_share


def kept_value(decision: Decision, analysis: Analysis, blocks: list[Block], scores: dict[str, np.ndarray],
               layer_scores: dict[str, float] | None = None) -> float:
    """The solver's objective at `decision` (higher: less pruned). `layer_scores`: layer mode's block scores."""
    if layer_scores is not None:  # layer mode keeps every width: only the removed blocks' importance is lost
        return -sum(float(layer_scores.get(b.id, 0.0)) for b in decision.removed)
    groups = [g for g in analysis.groups if g.prunable]
    inner = inner_groups(groups, blocks)
    owned = {g.id for members in inner.values() for g in members}
    gone = {g.id for b in decision.removed for g in inner.get(b.id, [])}
    value = 0.0
    for g in groups:
        if g.id in gone:
            continue
        entry = decision.plan.channels.get(g.id)  # a solver's plan lists the units it keeps (decision_from)
        kept = scores[g.id] if entry is None else np.asarray(scores[g.id], dtype=np.float64)[entry["keep"]]
        value += float(np.sum(kept))  # the units really kept: alignment can keep others than the top k
    free = [g for g in groups if g.id not in owned]
    return value - sum(outside_share(b, free, scores) for b in decision.removed)
