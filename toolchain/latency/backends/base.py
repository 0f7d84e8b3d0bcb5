"""One runner interface (after Polygraphy's loaders and runners): callers never ask which backend runs.

A `Backend` is the loader: it turns a `ModelSource` (source.py: the ONNX bytes, or the torch module
the same Plan gives) into a `Runner` bound to one fixed, seeded input. A `Runner` is a context
manager with
- `infer(feed) -> list[np.ndarray]`: outputs for any feed (the accuracy checks, verify, calibration);
- `run()`: one untimed inference on the fixed input (warm-up);
- `timed_run() -> ms`: one inference on the fixed input, complete when it returns (GPU runners time
  it with CUDA events, CPU runners with the wall clock around the call);
- `inputs`: {name: (shape, numpy dtype)} of the fixed input, batch included.
Backend libraries are imported lazily inside each backend's module, so a missing TensorRT breaks
nothing else. A new backend is one module with one Backend class, registered in `_BACKENDS`.
"""
from __future__ import annotations

import importlib
import inspect
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from graphs.errors import InputError

PRECISIONS = ("fp32", "fp16", "int8")


class Runner(Protocol):
    inputs: dict[str, tuple[tuple[int, ...], np.dtype]]

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs (host arrays, in graph order) for `feed`."""

    def run(self) -> None:
        """One untimed inference on the input fixed at prepare time."""

    def timed_run(self) -> float:
        """One inference on the fixed input, in ms, complete when it returns."""

    def close(self) -> None:
        """Release sessions, engines, buffers."""

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc) -> None: ...


class Backend(Protocol):
    name: str
    precision: str
    artifact_name: str  # the artifact's file name when `compress build -o` is a directory

    def prepare(self, model: Any, batch: int = 1) -> Runner:
        """A ModelSource (or ONNX bytes/path, see source.as_source) -> a ready Runner."""

    def channel_alignment(self) -> int:
        """Channel multiple the backend's kernels work in (the default round_to): widths off it cost
        padding and reorders, so tables sample, and solvers choose, only multiples of it."""

    def device(self) -> dict:
        """What a measurement depends on: device name, runtime + version, provider/precision."""

    def artifact(self, onnx_path, profile: tuple[int, int, int], calibration, workdir) -> "Artifact":
        """The deployable build of an ONNX file at this backend's precision (`compress build`);
        `calibration` (calib.calibration.Calibration) is required for int8."""


@dataclass
class Artifact:
    """A deployable build (`compress build`): the bytes written, what they are, and how to run them."""

    data: bytes            # the artifact file's content (an ONNX model or a serialized engine)
    format: str            # manifest "artifact.format": "onnx" | "tensorrt-engine"
    backend: dict          # manifest "backend": runtime, version, mode...
    source: Any            # a ModelSource the same backend's prepare() runs without rebuilding
    calibration: dict = field(default_factory=dict)  # what the build did with the calibration data


class RunnerBase(ABC):
    """What every runner shares: context management and wall-clock timing of one synchronous call."""

    inputs: dict = {}

    @abstractmethod
    def run(self) -> None:
        """One inference on the fixed input; returns when the result is ready."""

    def timed_run(self) -> float:
        t0 = time.perf_counter()
        self.run()
        return (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def seeded_inputs(specs: dict[str, tuple[tuple[int, ...], Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random arrays for {name: (shape, dtype)}: standard normal floats, 0/1 integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (shape, dtype) in specs.items():
        dtype = np.dtype(dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


# name -> (module, class); modules load only when asked for, so a missing TensorRT breaks nothing else
_BACKENDS = {
    "ort": ("toolchain.latency.backends.ort", "OrtBackend"),
    "tensorrt": ("toolchain.latency.backends.tensorrt", "TensorRTBackend"),
    "torch": ("toolchain.latency.backends.torch_backend", "TorchBackend"),
}


# Host tuning that only some runtimes have: dropped for the others.
_TUNING = {"threads", "spinning", "seed", "workspace_mb"}


def known_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str, **options) -> Backend:
    """Backend by name; unknown names and missing libraries are InputError (CLI exit 2).

    One set of options (precision, provider, threads, spinning, ...) serves every backend: host tuning
    a runtime has no use for (a thread pool that does not spin) and unset options (None) are dropped;
    any other option the backend cannot honour is an error.
    """
    if name not in _BACKENDS:
        raise InputError(f"unknown backend {name!r}: known backends are {', '.join(known_backends())}")
    module, cls = _BACKENDS[name]
    backend_cls = getattr(importlib.import_module(module), cls)
    accepted = inspect.signature(backend_cls.__init__).parameters
    unknown = [k for k, v in options.items() if k not in accepted and v is not None and k not in _TUNING]
    if unknown:
        raise InputError(f"the {name} backend has no option {unknown[0]!r}")
    return backend_cls(**{k: v for k, v in options.items() if k in accepted})


def require(module: str, install_hint: str):
    """Import a backend library or say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # includes the bindings-without-libnvinfer case (OSError is wrapped)
        raise InputError(f"{install_hint} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    except OSError as e:
        raise InputError(f"{install_hint} ({str(e).splitlines()[0]})") from None
