"""Active selection of table entries: measure what most reduces the predicted error of plans.

The per-layer model (predict.py) predicts a plan's saving as `features @ efficiency`. Read as a
Bayesian linear model, every layer's efficiency has a prior (the device profile's, or one
network-wide factor) with a relative spread, and every measured entry is one noisy linear
observation of it. The posterior covariance then gives each plan's predicted variance, and the
entry that most reduces the summed variance of a set of budget-relevant plans (mixed widths and
removals, as the solvers produce) is the one worth timing next; the covariance does not depend on
what the entries measured, so the choice is cheap and repeatable. Selection stops when the plans'
predicted error bound (two standard deviations, 90th percentile of plans) is under the target.

The fit itself stays the non-negative ridge fit of predict.py; this Gaussian reading of it only
ranks entries and says when enough were measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphs.blocks import Block
from graphs.deps import Analysis
from toolchain.latency.grid import Candidate
from toolchain.latency.predict import Predictor
from toolchain.solve.budget import width_options

# The spread a layer's prior may not go below: a per-op term or a layer prior of 0 still has this
# much uncertainty, in units of saving per unit of feature.
MIN_PRIOR_SD = 0.05


@dataclass
class Choice:
    entry: Candidate | None  # the entry to measure next (None: nothing left to measure)
    bound: float  # predicted relative error of the plans now: 90th percentile of 2 standard deviations


def representative_plans(analysis: Analysis, blocks: list[Block], round_to: int, count: int = 48,
                         seed: int = 12345) -> list[tuple[dict[str, int], list[Block]]]:
    """Plans like the solvers' at budgets 0.8-0.4: half narrow a random subset of groups to random
    widths and remove up to two blocks, half narrow every group to a random fraction of its width."""
    rng = np.random.default_rng(seed)
    groups = [g for g in analysis.groups if g.prunable]
    plans = []
    for i in range(count):
        kept = {}
        for g in groups:
            options = width_options(g, round_to)[:-1]
            if not len(options):
                continue
            if i % 2 == 0 and rng.random() < 0.6:
                kept[g.id] = int(rng.choice(options))
            elif i % 2 == 1:
                kept[g.id] = int(options[min(len(options) - 1, int(rng.random() * len(options)))])
        removed: list[Block] = []
        for b in rng.permutation(len(blocks))[: rng.integers(0, 3)] if blocks else []:
            if not any(set(blocks[b].nodes) & set(r.nodes) for r in removed):
                removed.append(blocks[b])
        plans.append((kept, removed))
    return plans


def entry_features(predictor: Predictor, entry: Candidate, blocks: dict[str, Block]) -> np.ndarray:
    if entry.kind == "group":
        return predictor.features({entry.item: entry.k})
    if entry.kind == "block":
        return predictor.features({}, set(blocks[entry.item].nodes))
    kept = {g: len(s["keep"]) for g, s in entry.plan.channels.items()}
    return predictor.features(kept, {n for b in entry.plan.remove for n in blocks[b].nodes})


def _plan_features(predictor: Predictor, plans) -> tuple[np.ndarray, np.ndarray]:
    """Features of what each plan's prediction still models (the narrowed layers, and removed blocks
    the table has not measured: a measured block's saving is its entry), and its predicted ratio."""
    rows, ratios = [], []
    for kept, removed in plans:
        width, _ = predictor.parts(kept, {n for b in removed for n in b.nodes})
        modelled = [b for b in removed if b.id not in predictor.table.blocks]
        depth = predictor.parts({}, {n for b in modelled for n in b.nodes})[1] if modelled else 0.0
        rows.append(width + depth)
        ratios.append(predictor.predict(kept, removed).corrected)
    # Relative to at least a fifth of the latency: a plan predicted near the floor must not dominate.
    return np.array(rows), np.maximum(np.array(ratios), 0.2)


def prior_sd(predictor: Predictor) -> np.ndarray:
    """Each efficiency's prior standard deviation. Fixed while entries come in (a refitted level would
    move the bound up and down): the device profile's value times its spread; without a profile, the
    spread around 1, the efficiency of a layer that costs exactly its share of the MACs."""
    level = predictor.prior if predictor.table.prior else np.ones_like(predictor.prior)
    return np.maximum(level * predictor.prior_spread, MIN_PRIOR_SD)


def posterior(predictor: Predictor, measured: np.ndarray, noise: float) -> np.ndarray:
    """Covariance of the efficiencies given the measured entries' features (rows of `measured`)."""
    sd = prior_sd(predictor)
    precision = np.diag(1.0 / sd ** 2)
    if len(measured):
        precision += measured.T @ measured / noise ** 2
    return np.linalg.inv(precision)


def choose(predictor: Predictor, measured: list[Candidate], pool: list[Candidate], plans, noise: float) -> Choice:
    """The next entry to measure among `pool`, and the plans' predicted error bound now."""
    blocks = predictor.blocks
    known = np.array([entry_features(predictor, e, blocks) for e in measured]).reshape(len(measured), len(predictor.prior))
    cov = posterior(predictor, known, noise)
    features, ratios = _plan_features(predictor, plans)
    # The model's error, not a future measurement's: the plans' own timing noise is not added.
    sd = np.sqrt(np.einsum("ij,jk,ik->i", features, cov, features)) / ratios
    bound = float(np.percentile(2 * sd, 90))
    if not pool:
        return Choice(None, bound)
    x = np.array([entry_features(predictor, e, blocks) for e in pool])
    reach = cov @ x.T  # how each candidate's observation moves every efficiency
    weights = 1.0 / ratios ** 2  # relative error: a plan at 0.4 counts its variance 2.5x as much
    gain = ((features @ reach) ** 2 * weights[:, None]).sum(0) / (noise ** 2 + np.einsum("ij,ji->i", x, reach))
    return Choice(pool[int(np.argmax(gain))], bound)
