"""Latency backends behind one runner interface: "ort", "tensorrt", "torch"."""
from toolchain.latency.backends.base import Backend, Runner, get_backend, known_backends

__all__ = ["Backend", "Runner", "get_backend", "known_backends"]
