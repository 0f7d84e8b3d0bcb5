"""One small runner interface (after Polygraphy's runners): callers never ask which backend runs.

A `Backend` turns a model into a `Runner` bound to one fixed random input; `Runner.run()` is one
inference, complete when it returns (GPU backends synchronise), so wall-clock timing around it is
honest. Backend libraries are imported lazily inside each backend module's functions.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol

from graphs.errors import InputError


class Runner(Protocol):
    def run(self) -> Any:
        """One inference on the input fixed at prepare time; returns when the result is ready."""

    def close(self) -> None:
        """Release sessions, engines, buffers."""


class Backend(Protocol):
    name: str

    def prepare(self, model: Any, batch: int = 1) -> Runner:
        """Model (ONNX bytes/path, or an nn.Module for "torch") -> a ready Runner."""

    def channel_alignment(self) -> int:
        """Channel multiple the backend's kernels work in (the default round_to): widths off it cost
        padding and reorders, so tables sample, and solvers choose, only multiples of it."""

    def device(self) -> dict:
        """What a measurement depends on: device name, runtime + version, provider/precision."""


# name -> (module, class); modules load only when asked for, so a missing TensorRT breaks nothing else
_BACKENDS = {
    "ort": ("toolchain.latency.backends.ort", "OrtBackend"),
    "tensorrt": ("toolchain.latency.backends.tensorrt", "TensorRTBackend"),
    "torch": ("toolchain.latency.backends.torch_backend", "TorchBackend"),
}


def known_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str, **options) -> Backend:
    """Backend by name; unknown names and missing libraries are InputError (CLI exit 2)."""
    if name not in _BACKENDS:
        raise InputError(f"unknown backend {name!r}: known backends are {', '.join(known_backends())}")
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(**options)


def require(module: str, install_hint: str):
    """Import a backend library or say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # includes the bindings-without-libnvinfer case (OSError is wrapped)
        raise InputError(f"{install_hint} ({e})") from None
    except OSError as e:
        raise InputError(f"{install_hint} ({e})") from None
