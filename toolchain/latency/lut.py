"""Latency lookup tables (SP-LAMP eq. 7): whole-network latency with only one group narrowed to k
channels (coupled layers narrowed together, wherever they sit), or with one block removed.

Every entry is a ratio to the unpruned model, timed interleaved with it (measure.py), and stored in
the SQLite store under a key that says exactly when it can be reused. Profiling skips what the
store already holds, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

from graphs.deps import analyze
from graphs.errors import InputError
from graphs.onnx_io import load_model, model_sha256
from toolchain.latency.backends import OnnxSource, get_backend
from toolchain.latency.config import ProfileConfig, resolve_round_to
from toolchain.latency.grid import Candidate, candidate_source, candidates
from toolchain.latency.measure import interleaved_ratio
from toolchain.latency.store import Key, Store
from toolchain.latency.table import Table, load_table


def _key(sha: str, candidate: Candidate, device: dict, config: ProfileConfig) -> Key:
    return Key(sha, candidate.kind, candidate.item, candidate.k, config.backend, device["device"], config.precision, config.batch,
               f"{device['runtime']} {device['runtime_version']}", config.protocol)


# A pruned candidate timed this much slower than the full model is timed again, once, and the second
# figure kept: on this host a glitch once put two 32-of-64 widths of resnet18 at 1.42x and 1.31x
# (0.95x in every other table), and least squares follows such outliers.
SUSPECT_RATIO = 1.05


def measure_pair(backend, reference_runner, candidate_model, config: ProfileConfig) -> dict:
    with backend.prepare(candidate_model, batch=config.batch) as runner:
        for _ in range(2):
            result = interleaved_ratio(runner, reference_runner, warmup=config.warmup, runs=config.runs,
                                       pause_s=config.pause_s, target_se=config.target_se,
                                       max_runs=3 * config.runs, only_if_reachable=True)
            if result.ratio <= SUSPECT_RATIO:
                break
    return {"ratio": result.ratio, "ref_median_ms": result.reference.median, "median_ms": result.candidate.median,
            "p90_ms": result.candidate.p90, "std_ms": result.candidate.std, "count": result.candidate.count}


def profile(onnx_path: str, store_path: str, config: ProfileConfig, progress=None, fresh: bool = False,
            ray_address: str | None = None, ray_resource: str | None = None) -> Table:
    """Measure what the store lacks for this model/backend/device, then return the full table."""
    if config.batch < 1:
        raise InputError(f"--batch must be >= 1, got {config.batch}")
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
    if ray_address:
        from toolchain.latency import distributed
    with Store(store_path) as store:
        store.bind(sha, config.backend, config.precision, config.batch, device["device"],
                   f"{device['runtime']} {device['runtime_version']}", device, fresh=fresh)
        missing = [c for c in todo if store.get(_key(sha, c, device, config)) is None]
        if progress is not None:
            progress.start(len(todo), len(todo) - len(missing))
        if ray_address:
            distributed.measure_on_ray(
                ray_address, ray_resource, base, missing,
                lambda c: candidate_source(base, analysis, c), config, device,
                lambda c, values: _record(store, sha, c, device, config, values, progress))
        else:
            for c in missing:
                values = measure_pair(backend, reference, candidate_source(base, analysis, c), config)
                _record(store, sha, c, device, config, values, progress)
        return load_table(store, sha, analysis, device, config)


def _record(store: Store, sha: str, candidate: Candidate, device: dict, config: ProfileConfig, values: dict,
            progress) -> None:
    store.put(_key(sha, candidate, device, config), values)
    if progress is not None:
        progress.advance(candidate)

