"""Latency backends behind one runner interface: "ort", "tensorrt", "torch" (base.py says how)."""
from toolchain.latency.backends.base import Backend, Runner, get_backend, known_backends
from toolchain.latency.backends.source import ModelSource, ModuleSource, OnnxSource, PlanSource, as_source

__all__ = ["Backend", "Runner", "get_backend", "known_backends", "ModelSource", "ModuleSource", "OnnxSource",
           "PlanSource", "as_source"]
