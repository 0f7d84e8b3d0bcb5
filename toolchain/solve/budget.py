"""Decide what to cut under a latency budget, from latency tables and importance scores.

Three modes, one cost model: a change's cost is the whole-network latency ratio its table entry
measured, and changes add up (SP-LAMP eq. 6); toolchain/latency/predict.py corrects the overlaps
afterwards and the pruned model is then measured for real.
- filter: SP-LAMP's group knapsack (each group keeps exactly one width >= 1), or HALP's 0-1
  knapsack over single channels as the baseline;
- layer: LayerPrune, remove the least important blocks until the budget is met;
- joint: groups and blocks in one group knapsack. A removable block is one item whose options
  are "removed" or "kept with each combination of widths of the groups that live inside it".
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from graphs.alignment import aligned_widths
from graphs.blocks import Block
from graphs.deps import Analysis, Group
from graphs.errors import InputError
from graphs.plan import Plan
from toolchain.latency.anchors import anchor_blocks
from toolchain.latency.table import Table
from toolchain.latency.predict import Prediction, Predictor
from toolchain.solve.descend import descend, narrower
from toolchain.solve.knapsack import RESOLUTION, GroupKnapsack, to_units, zero_one_knapsack
from toolchain.solve.width_floor import NO_FLOOR, WidthFloor  # noqa: F401 (callers import it from here too)

MAX_BLOCK_OPTIONS = 4096
# A fitting plan predicted this far below its budget wastes it: descent (descend.py) is tried then.
DESCEND_GAP = 0.03


@dataclass
class Decision:
    plan: Plan
    kept: dict[str, int]  # group id -> kept units
    removed: list[Block]
    predicted: Prediction
    smallest: float  # smallest latency ratio this mode can reach (the corrected prediction)


def width_options(group: Group, round_to: int, width_floor: WidthFloor = NO_FLOOR) -> np.ndarray:
    """Kept-unit counts a group may take (graphs/alignment.py), plus full width; none below the floor."""
    least = width_floor.min_kept(group)
    ks = [k for k in aligned_widths(group.channels, group.multiplicity, round_to) if k >= least] + [group.channels]
    return np.array(ks, dtype=np.int64)


def top_values(scores: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """For each k in `ks`, the summed scores of the k best units."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    return np.concatenate([[0.0], np.cumsum(ordered)])[ks]


def check_budget(budget: float) -> None:
    """The one check of a latency budget's range (a fraction of the unpruned latency), for every caller."""
    if not 0.0 < budget <= 1.0:
        raise InputError(f"--budget must be in (0, 1], got {budget}")


class Unreachable(InputError):
    """The budget is below the smallest latency this mode is predicted to reach (`smallest`)."""

    def __init__(self, budget: float, smallest: float, mode: str, hint: str = ""):
        super().__init__(f"budget {budget:.3f} is below the smallest latency {mode} pruning reaches here: "
                         f"{smallest:.3f} of the unpruned model (predicted){hint}")
        self.budget, self.smallest = budget, smallest


def _unreachable(budget: float, smallest: float, mode: str, width_floor: WidthFloor = NO_FLOOR) -> Unreachable:
    return Unreachable(budget, smallest, mode, width_floor.reach_hint())


# Above this predicted floor, narrowing every group saves so little that the backend is bound by per-op
# overhead (torch eager on an H200 at batch 1: resnet50's floor 0.986, every width halved measured 1.003).
WIDTH_BOUND = 0.9


def _depth_hint(analysis: Analysis, smallest: float) -> str:
    """Where widths barely move latency and the model has removable blocks, say that depth does."""
    if smallest <= WIDTH_BOUND or not analysis.blocks:
        return ""
    return (f"; narrowing every layer saves {1.0 - smallest:.0%} on this backend, whose time goes to per-op "
            f"overhead: --mode joint or layer removes whole blocks ({len(analysis.blocks)} removable here)")


def decision_from(predictor: Predictor, scores, kept, removed, round_to, budget, smallest, provenance) -> Decision:
    """The plan keeping each group's best units. Predicted from the widths the plan really keeps:
    a group whose producers could not all keep a unit within k keeps more (Group.choose)."""
    analysis = predictor.analysis
    keep = {gid: analysis.group(gid).choose(scores[gid], k).tolist() for gid, k in kept.items()
            if k < analysis.group(gid).channels}
    kept = {gid: len(units) for gid, units in keep.items()}
    prediction = predictor.predict(kept, removed)
    provenance = {**provenance, "budget": budget, "predicted_latency_ratio": round(prediction.corrected, 4),
                  "predicted_additive_ratio": round(prediction.additive, 4)}
    plan = Plan(channels={gid: {"keep": units} for gid, units in keep.items()}, remove=[b.id for b in removed],
                round_to=round_to, provenance=provenance)
    return Decision(plan, kept, removed, prediction, smallest)


def solve_filter(analysis: Analysis, table: Table, scores: dict[str, np.ndarray], budget: float,
                 round_to: int = 8, solver: str = "group-knapsack", criterion: str = "",
                 width_floor: WidthFloor = NO_FLOOR) -> Decision:
    """Widths only. `solver`: "group-knapsack" (SP-LAMP Alg. 1) or "halp" (0-1 knapsack baseline)."""
    check_budget(budget)
    groups = [g for g in analysis.groups if g.prunable]
    if solver == "halp":
        return _solve_halp(analysis, table, scores, groups, budget, round_to, criterion, width_floor)
    if solver != "group-knapsack":
        raise InputError(f"unknown solver {solver!r}: group-knapsack or halp")
    options = [width_options(g, round_to, width_floor) for g in groups]
    deltas = [np.array([table.group_ratio(g.id, int(k)) - 1.0 for k in ks]) for g, ks in zip(groups, options)]
    values = [top_values(scores[g.id], ks) for g, ks in zip(groups, options)]
    fastest = [int(np.argmin(d)) for d in deltas]
    narrowest = {g.id: int(ks[i]) for g, ks, i in zip(groups, options, fastest)}
    predictor = Predictor(table, analysis)
    smallest = predictor.predict(narrowest, []).corrected
    if budget < smallest:
        raise Unreachable(budget, smallest, "filter", width_floor.reach_hint() + _depth_hint(analysis, smallest))

    knapsack = _Knapsack(values, deltas)

    def decode(picked):
        return {g.id: int(ks[i]) for g, ks, i in zip(groups, options, picked)}, []

    kept, _ = _meet_corrected(knapsack, decode, predictor, budget, (smallest, fastest), values,
                              lambda item, option: narrower(option))
    return decision_from(predictor, scores, kept, [], round_to, budget, smallest,
                     {"criterion": criterion, "solver": "group-knapsack", "mode": "filter", **width_floor.note()})


def _meet_corrected(pick_for, decode, predictor: Predictor, budget: float, fastest: tuple[float, list[int]],
                    values: list[np.ndarray], moves):
    """Solve the additive knapsack, then move its target until the per-layer model's prediction
    fits the budget too (the additive model over-counts savings where changes share a layer).
    The target moves both ways: a plan the model predicts well under the budget wastes it, so the
    target is loosened again; the fitting plan closest to the budget wins. Where no target gives a
    plan within DESCEND_GAP of the budget, greedy descent (descend.py) from the best plan above it
    is tried too. `pick_for(target)` gives an option index per item (None: unreachable); `moves(item,
    option)` the options descent may change an item to. `fastest` is (its predicted ratio, the picks) of
    the plan taking every item's fastest option; the caller has checked it fits the budget, and it is
    the answer when no target does better: the additive model can put its own floor above the per-layer
    one, and a budget between the two has no other plan."""
    target, above = budget, None  # (predicted, picks)
    fitting = fastest
    for _ in range(8):
        picks = pick_for(target)
        if picks is None:  # the target is below what the additive tables can reach
            target = (target + budget) / 2
            continue
        corrected = predictor.predict(*decode(picks)).corrected
        if corrected <= budget + 1e-3:
            if corrected > fitting[0]:
                fitting = (corrected, picks)
            if budget - corrected <= 0.005:
                break
        elif above is None or corrected < above[0]:
            above = (corrected, picks)
        target += budget - corrected
    if above is not None and fitting[0] < budget * (1.0 - DESCEND_GAP):
        descended = descend(above[1], values, decode, predictor, budget, moves)
        if descended is not None:
            corrected = predictor.predict(*decode(descended)).corrected
            if corrected > fitting[0]:
                fitting = (corrected, descended)
    return decode(fitting[1])


class _Knapsack:
    """Group knapsack on latency deltas, solved once for every target the search will ask:
    weights are each option's delta above the item's cheapest."""

    def __init__(self, values: list[np.ndarray], deltas: list[np.ndarray]):
        floors = [float(d.min()) for d in deltas]
        self.floor = sum(floors)
        self.solver = GroupKnapsack(values, [to_units(d - f) for d, f in zip(deltas, floors)])

    def __call__(self, target: float) -> list[int] | None:
        return self.solver.pick(int(math.floor((target - 1.0 - self.floor) * RESOLUTION + 1e-9)))


def _solve_halp(analysis, table, scores, groups, budget, round_to, criterion, width_floor: WidthFloor) -> Decision:
    """HALP: every channel is an item (value = its score, weight = the latency it adds as the j-th
    kept channel of its group); a group the knapsack empties keeps its best channel (HALP's fix-up),
    or its best min_kept channels under a max_prune floor."""
    resolution = 2000  # items x capacity booleans: 2,000 keeps resnet50 under ~100 MB
    item_group, item_rank, item_values, item_weights = [], [], [], []
    floor = 1.0
    fixed = {}  # group index -> channels always kept
    for gi, g in enumerate(groups):
        ratios = np.array([table.group_ratio(g.id, j) for j in range(1, g.channels + 1)])
        fixed[gi] = width_floor.min_kept(g)
        floor += ratios[fixed[gi] - 1] - 1.0
        marginal = np.diff(ratios, prepend=ratios[0])  # the kept channels are never removable
        ordered = np.sort(scores[g.id])[::-1]
        for j in range(fixed[gi], g.channels):
            item_group.append(gi)
            item_rank.append(j)
            item_values.append(ordered[j])
            item_weights.append(max(0.0, marginal[j]))
    capacity = int(math.floor((budget - floor) * resolution + 1e-9))
    if capacity < 0:
        raise _unreachable(budget, floor, "filter (halp)", width_floor)
    mask = zero_one_knapsack(np.array(item_values), np.round(np.array(item_weights) * resolution).astype(np.int64),
                             capacity)
    counts = np.array([fixed[gi] for gi in range(len(groups))], dtype=np.int64)
    np.add.at(counts, np.array(item_group, dtype=np.int64)[mask], 1)
    kept = {g.id: int(c) for g, c in zip(groups, counts)}
    return decision_from(Predictor(table, analysis), scores, kept, [], 1, budget, floor,
                     {"criterion": criterion, "solver": "halp-0-1-knapsack", "mode": "filter", **width_floor.note()})


def solve_layer(analysis: Analysis, table: Table, blocks: list[Block], layer_scores: dict[str, float],
                budget: float, criterion: str = "", group_scores: dict | None = None) -> Decision:
    """LayerPrune: remove blocks from the least important up until the predicted latency fits.

    A block whose removal measured no faster is never a candidate: it would cost accuracy for
    nothing (a block without an entry is left to the per-layer model)."""
    check_budget(budget)
    predictor = Predictor(table, analysis, blocks)
    blocks = [b for b in blocks if not table.block_known(b.id) or table.block_ratio(b.id) < 1.0]
    order = sorted(blocks, key=lambda b: layer_scores.get(b.id, 0.0))
    removed: list[Block] = []
    everything = set(anchor_blocks(blocks, 1.0))  # every block that can go together
    smallest = predictor.predict({}, [b for b in blocks if b.id in everything]).corrected
    for block in order:
        if predictor.predict({}, removed).corrected <= budget:
            break
        if any(set(block.nodes) & set(r.nodes) for r in removed):
            continue
        removed.append(block)
    reached = predictor.predict({}, removed).corrected
    if reached > budget:
        raise _unreachable(budget, min(smallest, reached), "layer")
    scores = group_scores or {}
    return decision_from(predictor, scores, {}, removed, 1, budget, smallest,
                     {"criterion": criterion, "solver": "layer-budget", "mode": "layer"})


def within(module: str, members: list[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in members)


def outside_share(block: Block, groups: list[Group], scores: dict[str, np.ndarray]) -> float:
    """What removing `block` costs in `groups` that continue outside it (a residual stream): it deletes
    its filters there, so it is charged their share of each group's value, by producer count."""
    return sum(float(np.sum(scores[g.id])) * sum(within(m, block.members) for m in g.widths) / len(g.widths)
               for g in groups if g.widths)


def inner_groups(groups: list[Group], blocks: list[Block]) -> dict[str, list[Group]]:
    """Block id -> the prunable groups that live wholly inside it (each group in its first such block)."""
    inner: dict[str, list[Group]] = {}
    owned: set[str] = set()
    for b in blocks:
        for g in groups:
            if g.id not in owned and g.widths and all(within(m, b.members) for m in g.widths):
                inner.setdefault(b.id, []).append(g)
                owned.add(g.id)
    return inner


def _block_options(members: list[Group], options: dict, top: dict, delta: dict):
    """A block's "kept" options: every combination of its inner groups' widths (sampled down to
    MAX_BLOCK_OPTIONS, the full widths always kept), with each combination's value and delta."""
    if not members:  # no prunable group inside (reshape(-1, 0) of an empty array is ambiguous): one option
        picks = np.zeros((1, 0), dtype=np.int64)
    else:
        picks = np.array(list(itertools.product(*[range(len(options[g.id])) for g in members])),
                         dtype=np.int64).reshape(-1, len(members))
    if len(picks) > MAX_BLOCK_OPTIONS:
        step = math.ceil(len(picks) / MAX_BLOCK_OPTIONS)
        picks = np.vstack([picks[::step], [[len(options[g.id]) - 1 for g in members]]])
    combos = [tuple(int(options[g.id][i]) for g, i in zip(members, row)) for row in picks]
    keep_values = sum((top[g.id][picks[:, j]] for j, g in enumerate(members)), np.zeros(len(picks)))
    keep_deltas = sum((delta[g.id][picks[:, j]] for j, g in enumerate(members)), np.zeros(len(picks)))
    return combos, keep_values, keep_deltas


def solve_joint(analysis: Analysis, table: Table, blocks: list[Block], scores: dict[str, np.ndarray],
                budget: float, round_to: int = 8, criterion: str = "", width_floor: WidthFloor = NO_FLOOR) -> Decision:
    """Width and depth under one budget (one group knapsack; see the module docstring). The width floor
    bounds how narrow a group may go; a removable block may still go whole."""
    check_budget(budget)
    groups = [g for g in analysis.groups if g.prunable]
    inner = inner_groups(groups, blocks)
    owned = {g.id for members in inner.values() for g in members}
    options = {g.id: width_options(g, round_to, width_floor) for g in groups}
    # Per group and width option: the value of its top-k units and its table delta, looked up once.
    top = {g.id: top_values(scores[g.id], options[g.id]) for g in groups}
    delta = {g.id: np.array([table.group_ratio(g.id, int(k)) - 1.0 for k in options[g.id]]) for g in groups}

    items, values, deltas = [], [], []
    for g in groups:
        if g.id not in owned:
            items.append(("group", g, options[g.id]))
            values.append(top[g.id])
            deltas.append(delta[g.id])
    for b in blocks:
        members = inner.get(b.id, [])
        combos, keep_values, keep_deltas = _block_options(members, options, top, delta)
        items.append(("block", b, combos, members))
        values.append(np.append(keep_values, -outside_share(b, [g for g in groups if g.id not in owned], scores)))
        deltas.append(np.append(keep_deltas, table.block_ratio(b.id) - 1.0))

    def decode(picked):
        kept, removed = {}, []
        for item, choice in zip(items, picked):
            if item[0] == "group":
                kept[item[1].id] = int(item[2][choice])
            elif choice == len(item[2]):
                removed.append(item[1])
            else:
                kept.update({g.id: int(k) for g, k in zip(item[3], item[2][choice])})
        return kept, removed

    predictor = Predictor(table, analysis, blocks)
    fastest = [int(np.argmin(d)) for d in deltas]
    smallest = predictor.predict(*decode(fastest)).corrected
    if budget < smallest:
        raise _unreachable(budget, smallest, "joint", width_floor)

    knapsack = _Knapsack(values, deltas)

    def moves(item: int, option: int) -> list[int]:  # a group narrows; a block goes (its last option)
        if items[item][0] == "group":
            return narrower(option)
        return [] if option == len(items[item][2]) else [len(items[item][2])]

    kept, removed = _meet_corrected(knapsack, decode, predictor, budget, (smallest, fastest), values, moves)
    return decision_from(predictor, scores, kept, removed, round_to, budget, smallest,
                     {"criterion": criterion, "solver": "joint-group-knapsack", "mode": "joint", **width_floor.note()})
