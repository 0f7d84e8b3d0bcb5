"""`compress prune --budget`: profile what is missing, score, solve, prune, then measure for real.

A budget is a ceiling, met by the *measured* latency (DESIGN.md): after pruning, the model is timed
interleaved with the unpruned one, and the plan meets budget B when the measured ratio is <= B plus
one standard error of that measurement. A plan that misses, or that lands more than `tolerance`
below B (pruned more than asked), is re-solved with a moved target (at most `refine` times). Where the
plan kept would still be more than `tolerance` under B and a wider plan missed it, up to `fill` plans
between the two are measured (toolchain/solve/between.py). Among the plans that meet the budget the
least pruned (the most importance kept, toolchain/solve/value.py) is kept, once `confirm` fresh measurements
say it meets the budget too: it was kept for measuring well among several, so its own figure is biased low (a single measurement
spreads ~1.7x the standard error it reports). A plan that would end the loop is confirmed before it does, and
a fresh figure that misses re-solves tighter; at the end a kept plan whose fresh figure misses gives way to the
next. Multi-stage schedules (SP-LAMP 3.3) prune in k steps of equal latency reduction, re-profiling and
re-scoring the current model each time, with a hook between stages (`toolchain.finetune.finetune_between_stages`)."""
from __future__ import annotations

import math
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from graphs.deps import analyze
from graphs.atomic import atomic_dir, check_out_dir, write_json
from graphs.errors import InputError
from graphs.onnx_io import load_model, model_metadata
from toolchain.batchnorm import recalibrate_dir
from toolchain.latency.backends import get_backend
from toolchain.latency.config import ProfileConfig, resolve_round_to
from toolchain.latency.host_load import LoadGuard, busy_note
from toolchain.latency.lut import profile
from toolchain.latency.measure import interleaved_ratio
from toolchain.onnx_only import initializer_module
from toolchain.prune import prune_to_dir
from toolchain.pruned_dir import load_pruned_module
from toolchain.refine_choice import Attempt, choose_attempt, meets_budget
from toolchain.refine_targets import next_target
from toolchain.latency.predict import Predictor
from toolchain.solve.between import path_between, plan_on_path, widening_path
from toolchain.refine_checks import check_onnx_only, check_request, make_width_floor
from toolchain.solve.budget import Decision, Unreachable, solve_filter, solve_joint, solve_layer, WidthFloor
from toolchain.solve.value import kept_value
from toolchain.torch_source import torch_module_for

# A budget this close below the predicted floor is not refused on the prediction: the fastest plan is
# measured first. The per-layer model errs most on the deepest plans, the ones the floor is made of:
# Lite0's plans predicted under 0.45 measured 0.68-1.59 of their prediction, and a 0.75 width floor
# refused 0.35 on a predicted 0.408 (mobilenet_v2 layer-only at 0.6, on 0.601). One more plan
# measured costs seconds; a wrong refusal costs the user the budget.
FLOOR_MARGIN = 0.15


@dataclass
class BudgetRequest:
    budget: float
    mode: str = "joint"
    criterion: str = "l1"
    layer_criterion: str | None = None  # default: the mean of `criterion` over each block
    solver: str = "group-knapsack"  # filter mode: or "halp"
    round_to: int | None = None  # None: the table's round_to (the backend's channel block by default)
    max_prune: float = 1.0  # no group loses more than this fraction of its width (filter and joint modes)
    max_prune_for: dict[str, float] = field(default_factory=dict)  # group id pattern -> its own max_prune
    stages: int = 1
    loader: object | None = None  # data for data-dependent criteria
    batches: int = 8
    bn_batches: int = 16  # batches of `loader` that re-estimate the kept plan's BatchNorm statistics (0: none)
    tolerance: float = 0.03  # a met plan this far below the budget is re-solved looser (it pruned too much)
    refine: int = 6  # re-solves after the first plan: near a budget neighbouring targets can give plans far apart
    fill: int = 3  # plans measured between a kept plan far under the budget and a wider one that missed it
    confirm: int = 1  # fresh measurements of the kept plan, which decide and report whether it meets the budget
    measure_runs: int = 60
    between_stages: Callable[[int, Path], None] | None = None
    log: Callable[[str], None] = field(default=lambda message: None)


def measure_against(reference_onnx: str, candidate_dir: str, config: ProfileConfig, runs: int) -> dict:
    backend = get_backend(config.backend, **config.backend_options())
    reference = backend.prepare(reference_onnx, batch=config.batch)
    candidate = backend.prepare(candidate_dir, batch=config.batch)  # a prune directory: ONNX or torch module
    try:
        result, busy = LoadGuard().measure(lambda: interleaved_ratio(candidate, reference, warmup=config.warmup,
                                                                     runs=runs, pause_s=config.pause_s))
    finally:
        candidate.close()
        reference.close()
    return {"ratio": result.ratio, "ratio_se": float(result.ratio_se), "reference_ms": result.reference.median,
            "pruned_ms": result.candidate.median, "host_busy": busy}


def measure_afresh(reference_onnx: str, candidate: str, config: ProfileConfig, runs: int, times: int) -> dict:
    """`times` fresh measurements of a candidate already measured once, pooled into one figure. Each
    measurement's own error misses the session-to-session spread (~1.7x it here): with several fresh
    figures their scatter counts too."""
    fresh = [measure_against(reference_onnx, candidate, config, runs) for _ in range(times)]
    pooled = {key: sum(m[key] for m in fresh) / times for key in ("ratio", "reference_ms", "pruned_ms")}
    spread = statistics.stdev(m["ratio"] for m in fresh) / math.sqrt(times) if times > 1 else 0.0
    return pooled | {"ratio_se": max(math.sqrt(sum(m["ratio_se"] ** 2 for m in fresh)) / times, spread),
                     "host_busy": max(m["host_busy"] for m in fresh)}


def _scores(request: BudgetRequest, module: torch.nn.Module, analysis, blocks):
    from toolchain.criteria import filter_scores, layer_scores

    group = filter_scores(request.criterion, module, analysis, loader=request.loader, batches=request.batches)
    layer = None
    if request.mode == "layer":
        name = request.layer_criterion or f"mean:{request.criterion}"
        layer = layer_scores(name, module, analysis, blocks, loader=request.loader, batches=request.batches)
    return group, layer


def _solve(request: BudgetRequest, target: float, analysis, table, blocks, group, layer,
           width_floor: WidthFloor) -> Decision:
    if request.mode == "filter":
        return solve_filter(analysis, table, group, target, request.round_to, request.solver, request.criterion,
                            width_floor)
    if request.mode == "layer":
        return solve_layer(analysis, table, blocks, layer, target, request.layer_criterion or f"mean:{request.criterion}", group)
    return solve_joint(analysis, table, blocks, group, target, request.round_to, request.criterion, width_floor)


def _solve_near_floor(request: BudgetRequest, target: float, attempt: int, solve):
    """(decision, the refusal held back or None, the target solved): a first target just below the
    predicted floor (FLOOR_MARGIN) is solved at the floor, so the fastest plan is measured before refusing."""
    try:
        return solve(target), None, target
    except Unreachable as exc:
        if attempt or target < exc.smallest * (1.0 - FLOOR_MARGIN):
            raise
        request.log(f"  {exc}: measuring the fastest plan before refusing")
        try:
            return solve(exc.smallest), exc, exc.smallest
        except Unreachable:  # the mode's greedy search does not reach its own floor: refuse as predicted
            raise exc from None


def prune_to_budget(onnx_path: str, out_dir: str, request: BudgetRequest, store: str, config: ProfileConfig,
                    progress=None) -> dict:
    data_criteria = check_request(request)  # before any profiling: a typo should not cost a table build
    onnx_only = not model_metadata(load_model(onnx_path)).get("compress.spec")
    if onnx_only:
        check_onnx_only(request, data_criteria)
    # One grid for the table and the solver: widths the table never sampled would be interpolated
    # across the backend's channel blocks (a 56-wide trunk is slower than a 64-wide one on AVX-512).
    config = resolve_round_to(replace(config, round_to=config.round_to or request.round_to))
    request = replace(request, round_to=request.round_to or config.round_to)
    target = check_out_dir(out_dir)  # before profiling: a bad DIR should not cost a table build
    target.parent.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=".compress-stages-", dir=target.parent))
    try:
        return _run_stages(onnx_path, out_dir, request, store, config, progress, workspace, onnx_only)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


@dataclass
class _Stage:
    """What one stage starts from: the model file, its torch module, its structure, the ratio reached."""
    current: str
    module: torch.nn.Module | None = None
    structure: dict | None = None
    achieved: float = 1.0
    onnx_only: bool = False  # no torch source: scores from the initializers, the graph pruned alone
    origin: dict[str, int] | None = None  # group id -> its units in the unpruned model (the width floor's base)


def _run_stages(onnx_path, out_dir, request, store, config, progress, workspace: Path, onnx_only: bool) -> dict:
    state, history = _Stage(onnx_path, onnx_only=onnx_only), []
    for stage in range(1, request.stages + 1):
        stage_budget = 1.0 - (1.0 - request.budget) * stage / request.stages  # of the original latency
        last = stage == request.stages
        stage_dir = workspace / f"stage-{stage}"  # attempts are written here; DIR only once, at the end
        best, summary, rows = _run_stage(onnx_path, stage, stage_budget, stage_dir, state, request, store, config,
                                         progress)
        history.extend(rows)
        state = _Stage(str(stage_dir / "model.onnx"), None if onnx_only else load_pruned_module(stage_dir),
                       summary.get("structure"), best.measured["ratio"], onnx_only, state.origin)
        if request.between_stages is not None and not last:
            request.between_stages(stage, stage_dir)
            state.module = load_pruned_module(stage_dir)
    # The reported figures are the final stage's chosen plan's (the model written to out_dir).
    row = best.row
    latency = {"budget": request.budget, "measured": best.measured["ratio"], "measured_se": best.measured["ratio_se"],
               "confirmed": row.get("confirmed", 0),
               "measured_when_chosen": row.get("first_ratio", best.measured["ratio"]),
               "predicted": row["predicted"], "predicted_additive": row["predicted_additive"],
               "reference_ms": row["reference_ms"], "pruned_ms": row["pruned_ms"],
               "met": meets_budget(best.measured, request.budget), "stages": request.stages, "history": history,
               # what the budget is about: a ratio on one backend, provider, precision and batch size
               "backend": config.backend, "provider": config.provider, "precision": config.precision,
               "batch": config.batch}
    with atomic_dir(out_dir, start_from=stage_dir) as tmp:  # DIR appears once, complete, with its latency
        summary = {**summary, "latency": latency, "batchnorm": recalibrate_dir(tmp, request.loader, request.bn_batches)}
        write_json(summary, tmp / "summary.json")
    return summary


def _log_table_checks(request: BudgetRequest, table) -> None:
    """The profile's warnings, and its control entry's reading when it took one (so a log shows it was checked)."""
    for warning in (table.load_warning, table.drift_warning, table.control_warning):
        if warning:
            request.log("  warning: " + warning)
    if table.control is not None and table.control_warning is None:
        end = table.control.end
        request.log(f"  control: an unchanged copy timed {table.control.ratio:.3f} +- {table.control.se:.3f} "
                    f"of the reference" + (f", {end.ratio:.3f} +- {end.se:.3f} after the entries" if end else "")
                    + " (no offset told from noise)")


@dataclass
class _Trials:
    """One stage's write-and-measure step: each decision is pruned into `stage_dir` and timed against
    the unpruned model; `attempts` keeps them all."""
    onnx_path: str
    stage: int
    budget: float
    stage_dir: Path
    state: _Stage
    model: object
    analysis: object
    request: BudgetRequest
    config: ProfileConfig
    value_of: Callable[[Decision], float]  # the importance a plan keeps (toolchain/solve/value.py)
    attempts: list[Attempt] = field(default_factory=list)
    written: tuple | None = None  # (decision, its summary): what stage_dir holds now

    def write(self, decision: Decision) -> dict:
        """Prune `decision` into stage_dir (once: the same decision gives the same model); its summary."""
        if self.written is None or self.written[0] is not decision:
            self.written = (decision, self._prune(decision))
        return self.written[1]

    def _prune(self, decision: Decision) -> dict:
        state = self.state
        if state.onnx_only:
            return prune_to_dir(state.current, str(self.stage_dir), decision.plan, analysis=self.analysis)
        stage_module = (load_pruned_module(Path(state.current).parent) if state.structure is not None
                        else torch_module_for(self.model)[0])
        return prune_to_dir(state.current, str(self.stage_dir), decision.plan, module=stage_module,
                            structure=state.structure, analysis=self.analysis)

    def measure(self, decision: Decision, target: float | None, label: str) -> Attempt:
        summary = self.write(decision)
        measured = measure_against(self.onnx_path, str(self.stage_dir), self.config, self.request.measure_runs)
        achieved = self.state.achieved
        row = {"stage": self.stage, "attempt": len(self.attempts), "target": target, "budget": self.budget,
               "predicted": decision.predicted.corrected * achieved,
               "predicted_additive": decision.predicted.additive * achieved,
               "params": summary["params"]["after"], "value": self.value_of(decision), **measured}
        attempt = Attempt(decision, measured, summary["params"]["after"], row, row["value"])
        self.attempts.append(attempt)
        self.request.log(f"  {label}: predicted {row['predicted']:.3f}, measured {measured['ratio']:.3f} "
                         f"+- {measured['ratio_se']:.3f} of the original (budget {self.budget:.3f})"
                         + busy_note(measured["host_busy"]))
        return attempt

    def confirm(self, attempt: Attempt) -> None:
        """Measure `attempt`'s plan `request.confirm` more times; the fresh figures replace the one it was
        chosen on (kept in its row as `first_ratio`)."""
        self.write(attempt.decision)
        first, n = attempt.measured, self.request.confirm
        pooled = measure_afresh(self.onnx_path, str(self.stage_dir), self.config, self.request.measure_runs, n)
        attempt.measured = pooled
        attempt.row.update(pooled, first_ratio=first["ratio"], first_ratio_se=first["ratio_se"], confirmed=n)
        met = meets_budget(pooled, self.budget)
        self.request.log(f"  confirmed: {pooled['ratio']:.3f} +- {pooled['ratio_se']:.3f} over {n} fresh "
                         f"measurement{'s' if n > 1 else ''} (chosen on {first['ratio']:.3f})"
                         + ("" if met else ": misses the budget")
                         + busy_note(pooled["host_busy"]))


def _would_stop(measured: dict, budget: float, request: BudgetRequest) -> bool:
    """Met, and within `tolerance` of the budget: no re-solve can do better."""
    return meets_budget(measured, budget) and measured["ratio"] >= budget * (1.0 - request.tolerance)


def _confirmed_choice(trials: _Trials) -> Attempt:
    """The least-pruned attempt that still meets the budget once measured afresh (the fastest when none
    meets). Each attempt is confirmed at most once, so this ends."""
    while True:
        best = choose_attempt(trials.attempts, trials.budget)
        if trials.request.confirm < 1 or "confirmed" in best.row or not meets_budget(best.measured, trials.budget):
            return best
        trials.confirm(best)


def _run_stage(onnx_path, stage, stage_budget, stage_dir: Path, state: _Stage, request, store, config, progress):
    """Solve, prune, measure and re-solve one stage; returns (chosen attempt, its summary, history rows)."""
    model = load_model(state.current)
    analysis = analyze(model)
    first_stage = state.origin is None
    if first_stage:  # the floor counts from the unpruned widths: the first stage records them for the later ones
        state.origin = {g.id: g.channels for g in analysis.groups}
    width_floor = make_width_floor(request, state.origin, analysis, check_patterns=first_stage)
    # Without a torch source a removed layer cannot re-create its next conv in a checkable way (the masked
    # original has no such conv): only residual blocks are options there.
    blocks = [b for b in analysis.blocks if not (state.onnx_only and b.kind == "layer")]
    request.log(f"stage {stage}/{request.stages}: profiling {Path(state.current).name}")
    table = profile(state.current, store, config, progress=progress)
    _log_table_checks(request, table)
    if state.onnx_only:
        module = initializer_module(model)
    else:
        module = state.module if state.module is not None else torch_module_for(model)[0]
    group, layer = _scores(request, module, analysis, blocks)
    trials = _Trials(onnx_path, stage, stage_budget, stage_dir, state, model, analysis, request, config,
                     lambda d: kept_value(d, analysis, blocks, group, layer if request.mode == "layer" else None))
    target = min(1.0, stage_budget / state.achieved)
    tried: list[tuple[float, float]] = []  # (solver target, measured ratio of the original)
    below_floor = None  # the refusal to give if even the fastest plan measures over the budget
    for attempt in range(request.refine + 1):
        decision, floor_refusal, target = _solve_near_floor(
            request, target, attempt, lambda t: _solve(request, t, analysis, table, blocks, group, layer, width_floor))
        below_floor = below_floor or floor_refusal
        trial = trials.measure(decision, target, f"target {target:.3f} of the stage input")
        if _would_stop(trial.measured, stage_budget, request) and request.confirm:
            trials.confirm(trial)  # a plan that would end the loop is measured afresh first: a lucky figure re-solves
        measured = trial.measured
        tried.append((target, measured["ratio"]))
        if _would_stop(measured, stage_budget, request) or attempt == request.refine:
            break
        target = next_target(tried, stage_budget, target, floor=decision.smallest)
        if target is None:
            break
    _fill_between(trials, table, group, blocks)
    attempts = trials.attempts
    best = _confirmed_choice(trials)
    if below_floor is not None and not meets_budget(best.measured, stage_budget):
        raise InputError(f"{below_floor}; the fastest plan measured {best.measured['ratio']:.3f} "
                         f"+- {best.measured['ratio_se']:.3f}")
    rows, summary = [a.row for a in attempts], trials.write(best.decision)
    if best is not attempts[-1] or "confirmed" in best.row:
        rows.append({**best.row, "attempt": "chosen"})
    return best, summary, rows


def _fill_between(trials: _Trials, table, scores, blocks) -> None:
    """When the kept plan met the budget with more than `tolerance` to spare and a wider plan missed it,
    measure plans between the two (toolchain/solve/between.py), bisecting the path `fill` times."""
    request, budget, attempts = trials.request, trials.budget, trials.attempts
    low = choose_attempt(attempts, budget)
    if not request.fill or not meets_budget(low.measured, budget) or _would_stop(low.measured, budget, request):
        return
    missed = [a for a in attempts if not meets_budget(a.measured, budget) and a.value > low.value]
    if not missed:
        return
    high = min(missed, key=lambda a: a.measured["ratio"])
    path = path_between(low.decision, high.decision, trials.analysis, table, scores)
    predictor = Predictor(table, trials.analysis, None if request.mode == "filter" else blocks)  # as the solver's
    toward = f"between the plans measured {low.measured['ratio']:.3f} and {high.measured['ratio']:.3f}"
    widening = len(path.changes) <= 1  # the cliff is one change wide: no plan lies between the two
    if widening:
        why = f"one change ({path.changes[0].describe()})" if path.changes else "no change the path can take"
        path = widening_path(low.decision, predictor, trials.analysis, table, scores)
        request.log(f"  no plan {toward}: they differ by {why}"
                    + (f"; widening the first's narrowed groups, its blocks still removed ({len(path.changes)} "
                       f"steps)" if len(path.changes) > 1 else ""))
        toward = f"widening the plan measured {low.measured['ratio']:.3f}"
    lo, hi = 0, len(path.changes)  # the path's start (faster than `low`) and its end (`high`, or `low` widened)
    if widening:  # that path runs far past the budget: end it one step after the first plan predicted over it
        hi = min(hi, _first_predicted_over(low, path, predictor, scores, budget) + 1)
    for _ in range(request.fill):
        if hi - lo <= 1:
            break
        k = (lo + hi) // 2
        decision = plan_on_path(low.decision, path, k, predictor, scores, budget)
        trial = trials.measure(decision, None, f"{toward}, {k} of {len(path.changes)} changes toward the "
                               + ("full width" if widening else "second"))
        if not meets_budget(trial.measured, budget):
            hi = k
        elif _would_stop(trial.measured, budget, request):
            break
        else:
            lo = k


def _first_predicted_over(low: Attempt, path, predictor: Predictor, scores, budget: float) -> int:
    """The first k whose plan on `path` is predicted over `budget`, scaled by what `low` measured against its
    own prediction. ResNet-20 seed 2 at 0.5, widening from 0.478: the halfway plan of 16 steps measured 0.681,
    the quarter 0.574; bisecting the index alone spent the fill's three plans getting near."""
    scale = low.measured["ratio"] / max(low.decision.predicted.corrected, 1e-9)
    for k in range(1, len(path.changes) + 1):
        if plan_on_path(low.decision, path, k, predictor, scores, budget).predicted.corrected * scale > budget:
            return k
    return len(path.changes)
