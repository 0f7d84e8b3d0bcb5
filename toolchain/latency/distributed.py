"""Spread table measurements over Ray workers that advertise the target device as a resource.

Each worker holding the resource (e.g. `ray start --resources='{"jetson-orin": 1}'` on every
Jetson of a lab) times candidates against the reference on its own device; the driver does the
analysis, sends each candidate as a model source (the unpruned model + its Plan; the worker's backend
applies it in the form it runs), checks every answer came from the device the store is bound
to, and writes rows as they arrive, so an interruption loses only what was in flight. Each answer
carries the share of the worker machine's CPU that other processes used while it timed (host_load.py).
"""
from __future__ import annotations

import os
from typing import Callable

from graphs.errors import InputError
from toolchain.latency.backends.base import require


def _ray():
    return require("ray", "Ray is not installed: pip install 'compress[ray]'")


def connect(address: str) -> None:
    """`local` starts a private instance on this machine; anything else joins a running cluster."""
    ray = _ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        if address == "local":
            import tempfile

            ray.init(num_cpus=os.cpu_count(), resources={"compress-local": 1}, include_dashboard=False,
                     _temp_dir=tempfile.mkdtemp(prefix="compress-ray-"), log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as exc:
        raise InputError(f"cannot connect to Ray at {address}: {str(exc).splitlines()[0]}") from None


def _time_on_worker(reference, candidate, config, precise: bool = False) -> tuple[dict | None, dict, float | None]:
    """Runs on a worker: (measured values or None for a probe, the worker's device, the share of its
    machine's CPU other processes used meanwhile, or None).

    `reference` and `candidate` are model sources (backends/source.py): the worker's backend loads
    what it needs from them (surgery's ONNX, or the Plan applied to the torch module)."""
    from toolchain.latency.backends import get_backend
    from toolchain.latency.host_load import OtherLoad
    from toolchain.latency.lut import measure_pair

    backend = get_backend(config.backend, **config.backend_options())
    if candidate is None:
        return None, backend.device(), None
    with backend.prepare(reference, batch=config.batch) as runner:
        load = OtherLoad()
        values = measure_pair(backend, runner, candidate, config, precise=precise)
        return values, backend.device(), load.share()


def _remote(resource: str | None):
    ray = _ray()
    options = {"num_cpus": 1, "max_retries": 2}
    if resource:
        options["resources"] = {resource: 1}
    return ray.remote(**options)(_time_on_worker)


def worker_device(address: str, resource: str | None, config) -> dict:
    """The device the workers time on (the store is bound to it, not to the driver's machine)."""
    connect(address)
    _, device, _ = _answer(_ray().get(_remote(resource).remote(None, None, config)))
    return device


def _answer(answer) -> tuple:
    """A worker's (values, device, load share); workers on another compress version answer otherwise."""
    if not isinstance(answer, tuple) or len(answer) != 3:
        raise InputError("a Ray worker answered in another format: install the same compress version on the "
                         "workers as on this machine")
    return answer


def measure_on_ray(address: str, resource: str | None, reference, jobs: list,
                   make_candidate: Callable[[object], object], config, device: dict,
                   record: Callable[[object, dict, float | None], None],
                   precise: Callable[[object], bool] = lambda job: False, in_flight: int = 4) -> None:
    """Times `jobs` on the workers; `record(job, values, share)` gets each answer as it arrives (share:
    what other processes took of the worker machine's CPU during the timing, None where unknown)."""
    ray = _ray()
    connect(address)
    task = _remote(resource)
    ref = ray.put(reference)
    pending: dict = {}
    queue = list(jobs)
    while queue or pending:
        while queue and len(pending) < in_flight:
            job = queue.pop(0)
            pending[task.remote(ref, make_candidate(job), config, precise(job))] = job
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        values, seen, share = _answer(ray.get(done[0]))
        if seen["device"] != device["device"] or seen["runtime_version"] != device["runtime_version"]:
            raise InputError(f"a Ray worker measured on {seen['device']} / {seen['runtime_version']}, but this "
                             f"table is for {device['device']} / {device['runtime_version']}: give the device "
                             "its own Ray resource (--ray-resource)")
        record(job, values, share)
