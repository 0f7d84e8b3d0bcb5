"""Latency lookup tables (SP-LAMP eq. 7): whole-network latency with only one group narrowed to k
channels (coupled layers narrowed together, wherever they sit), or with one block removed.

Every entry is a ratio to the unpruned model, timed interleaved with it (measure.py), and stored in
the SQLite store under a key that says exactly when it can be reused. Profiling skips what the
store already holds, so an interrupted run resumes where it stopped.

`config.table` says how much is measured: "full" times the whole grid; "reduced" times the anchors,
then the entries active selection (active.py) picks one at a time until the plans' predicted error
bound is under `target_error` or `max_measurements` is reached; "prior" times the anchors only.
What is not measured is estimated by the per-layer model (estimate.py), whose prior is the device
profile learned from the other models measured on this device (device_profile.py). Every finished
table adds its model to that profile.
"""
from __future__ import annotations

import math
from dataclasses import replace

from graphs.deps import analyze
from graphs.errors import InputError
from graphs.onnx_io import load_model, model_sha256
from toolchain.latency import active
from toolchain.latency.backends import OnnxSource, get_backend
from toolchain.latency.config import ProfileConfig, check_table_mode, resolve_round_to
from toolchain.latency.control import Control, time_control
from toolchain.latency.device_profile import device_prior, device_where, learn
from toolchain.latency.estimate import fill_estimates
from toolchain.latency.grid import Candidate, candidate_source, candidates
from toolchain.latency.host_load import LoadGuard
from toolchain.latency.measure import interleaved_ratio
from toolchain.latency.predict import Predictor
from toolchain.latency.recheck import AnchorDrift, drift_warning, retime, stale_anchors
from toolchain.latency.store import Key, Store
from toolchain.latency.table import Table, load_table


def entry_key(sha: str, candidate: Candidate, device: dict, config: ProfileConfig) -> Key:
    return Key(sha, candidate.kind, candidate.item, candidate.k, config.backend, device["device"], config.precision, config.batch,
               f"{device['runtime']} {device['runtime_version']}", config.protocol)


# A pruned candidate timed this much slower than the full model is timed again, once, and the second
# figure kept: on this host a glitch once put two 32-of-64 widths of resnet18 at 1.42x and 1.31x
# (0.95x in every other table), and least squares follows such outliers.
SUSPECT_RATIO = 1.05


# Anchors, and every entry of a reduced table, are timed this many times longer, to a standard error
# this many times smaller. The two scales fitted to the anchors (predict.py) move every prediction, and
# a reduced table's few entries each decide the efficiencies of layers no other entry measures, so
# their timing noise is not averaged away as a full grid's is. On TensorRT an entry's cost is its
# engine build, not its timing, so precision is the cheap side of the trade.
PRECISE = 2


def precise_entry(candidate: Candidate, config: ProfileConfig) -> bool:
    """Whether this entry is timed at PRECISE: an anchor, or any entry of a reduced/prior table."""
    return candidate.kind == "anchor" or config.table != "full"


def measure_pair(backend, reference_runner, candidate_model, config: ProfileConfig, precise: bool = False) -> dict:
    scale = PRECISE if precise else 1
    target_se = config.target_se / scale if config.target_se else None
    with backend.prepare(candidate_model, batch=config.batch) as runner:
        for _ in range(2):
            result = interleaved_ratio(runner, reference_runner, warmup=config.warmup, runs=scale * config.runs,
                                       pause_s=config.pause_s, target_se=target_se,
                                       max_runs=3 * scale * config.runs, only_if_reachable=True)
            if result.ratio <= SUSPECT_RATIO:
                break
    return {"ratio": result.ratio, "ref_median_ms": result.reference.median, "median_ms": result.candidate.median,
            "p90_ms": result.candidate.p90, "std_ms": result.candidate.std, "count": result.candidate.count}


def profile(onnx_path: str, store_path: str, config: ProfileConfig, progress=None, fresh: bool = False,
            ray_address: str | None = None, ray_resource: str | None = None) -> Table:
    """Measure what the store lacks for this model/backend/device, then return the full table."""
    check_table_mode(config)
    model = load_model(onnx_path)
    sha = model_sha256(model)
    analysis = analyze(model)
    backend = get_backend(config.backend, **config.backend_options())
    config = resolve_round_to(config, backend)
    if ray_address:
        from toolchain.latency import distributed

        device = distributed.worker_device(ray_address, ray_resource, config)
    else:
        device = backend.device()
    todo = candidates(analysis, config)
    if not todo:
        raise InputError(f"{onnx_path}: nothing to profile: no prunable group wider than --round-to "
                         f"{config.round_to} and no removable block")
    # Load the model in the backend before the store is touched: a model the backend refuses must
    # leave no store behind.
    base = OnnxSource(model)
    reference = None if ray_address else backend.prepare(base, batch=config.batch)
    try:
        return _profile_into(store_path, base, sha, analysis, backend, reference, device, todo, config, progress,
                             fresh, ray_address, ray_resource)
    finally:
        if reference is not None:
            reference.close()


def _profile_into(store_path, base, sha, analysis, backend, reference, device, todo, config, progress, fresh,
                  ray_address, ray_resource) -> Table:
    guard = LoadGuard()  # re-times entries another process disturbed (host_load.py)
    with Store(store_path) as store:
        store.bind(sha, config.backend, config.precision, config.batch, device["device"],
                   f"{device['runtime']} {device['runtime_version']}", device, fresh=fresh)

        control: list[Control] = []  # this session's control entry (control.py), timed before its first entry
        timed: list[tuple] = []  # (candidate, key, values as timed) of each entry this session stored

        def measure(entries: list[Candidate]) -> None:
            if ray_address:  # each worker has its own reference session: no control entry there
                from toolchain.latency import distributed

                def record_remote(c: Candidate, values: dict, share: float | None) -> None:
                    guard.note(share)  # not re-timed, but counted towards the warning
                    _record(store, sha, c, device, config, values, progress)

                distributed.measure_on_ray(
                    ray_address, ray_resource, base, entries, lambda c: candidate_source(base, analysis, c), config,
                    device, record_remote, precise=lambda c: precise_entry(c, config))
                return
            if entries and not control:
                control.append(guard.measure(lambda: time_control(backend, reference, base, analysis, config))[0])
            for c in entries:
                source = candidate_source(base, analysis, c)
                values, _ = guard.measure(lambda: measure_pair(backend, reference, source, config,
                                                               precise=precise_entry(c, config)))
                timed.append((c, entry_key(sha, c, device, config), values))
                _record(store, sha, c, device, config, control[0].correct(values), progress)

        stored_row = lambda c: store.get(entry_key(sha, c, device, config))  # noqa: E731
        stored = lambda c: stored_row(c) is not None  # noqa: E731
        drifts = _recheck(todo, stored_row, measure, config, progress)
        if config.table == "full":
            if progress is not None:
                progress.start(len(todo), sum(map(stored, todo)))
            measure([c for c in todo if not stored(c)])
        else:
            measure_reduced(store, sha, analysis, device, config, todo, stored, measure, progress)
        if control:  # timed again: an offset is divided out only if it held through the session
            control[0] = replace(control[0], end=guard.measure(
                lambda: time_control(backend, reference, base, analysis, config))[0])
            drifts = _undo_offset(store, control[0], timed, drifts)
        table, predictor = read_table(store, sha, analysis, device, config)
        learn(store, device_where(device, config), sha, analysis, predictor,
              entries=sum(len(v) for v in table.groups.values()) + len(table.blocks))
        table = fill_estimates(table, analysis, config, predictor)
        table.load_warning = guard.warning()
        table.drifts, table.drift_warning = drifts, drift_warning(drifts)
        if control:
            table.control, table.control_warning = control[0], control[0].warning()
        return table


def _undo_offset(store: Store, control: Control, timed: list[tuple], drifts: list[AnchorDrift]) -> list[AnchorDrift]:
    """When the offset divided out at the start did not hold to the end, store the session's entries as
    timed; re-timed anchors then report what is stored now. Returns the drifts as they stand."""
    if control.applied or not control.offset_seen:
        return drifts
    for _, key, values in timed:
        store.put(key, values)
    as_timed = {c.item: values["ratio"] for c, _, values in timed if c.kind == "anchor"}
    return [replace(d, now=as_timed.get(d.item, d.now)) for d in drifts]


def _recheck(todo: list[Candidate], stored_row, measure, config: ProfileConfig, progress) -> list[AnchorDrift]:
    """Re-time the stored anchors older than config.recheck_after_s (recheck.py), before anything else."""
    stale = stale_anchors([c for c in todo if c.kind == "anchor"], stored_row, config.recheck_after_s)
    if not stale:
        return []
    if progress is not None:
        progress.start(len(stale), 0)
    return retime(stale, stored_row, measure)


def read_table(store: Store, sha: str, analysis, device: dict, config: ProfileConfig) -> tuple[Table, Predictor]:
    """The measured table with the device profile's prior attached, and its fitted per-layer model."""
    table = load_table(store, sha, analysis, device, config)
    table.prior, table.prior_spread = device_prior(store, device_where(device, config), sha, analysis, table.base_ms)
    return table, Predictor(table, analysis, analysis.blocks)


def measure_reduced(store, sha, analysis, device, config, todo, stored, measure, progress) -> None:
    """Anchors first, then (table="reduced") one actively chosen entry at a time until the plans'
    predicted error bound is met or the cap is reached. Resumable: what the store holds counts."""
    anchors = [c for c in todo if c.kind == "anchor"]
    singles = [c for c in todo if c.kind != "anchor"]
    # By default a quarter of the full grid (the issue's goal: resnet50's 128 entries -> 32), never
    # fewer than the anchors and one chosen entry.
    cap = config.max_measurements or max(len(anchors) + 1, math.ceil(len(todo) / 4))
    if config.table == "prior":
        cap = min(cap, len(anchors))
    if progress is not None:
        progress.start(min(cap, len(todo)), sum(map(stored, todo)))
    measure([c for c in anchors if not stored(c)][:max(0, cap - sum(map(stored, todo)))])
    plans = active.representative_plans(analysis, analysis.blocks, config.round_to)
    while sum(map(stored, todo)) < cap:
        table, predictor = read_table(store, sha, analysis, device, config)
        if not table.anchors and not table.groups and not table.blocks:
            measure([singles[0]])  # a model without anchors: one entry so the base latency is known
            continue
        done = [c for c in todo if stored(c)]
        noise = max(config.target_se or 0.01, predictor.fit_rms)
        choice = active.choose(predictor, done, [c for c in singles if not stored(c)], plans, noise)
        if choice.entry is None or choice.bound <= config.target_error:
            break
        measure([choice.entry])
def _record(store: Store, sha: str, candidate: Candidate, device: dict, config: ProfileConfig, values: dict,
            progress) -> None:
    store.put(entry_key(sha, candidate, device, config), values)
    if progress is not None:
        progress.advance(candidate)

