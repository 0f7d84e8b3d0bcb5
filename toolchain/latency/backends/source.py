"""What a backend's loader loads: one model, in the form each backend needs.

ONNX runtimes (ort, tensorrt) take `onnx_bytes()`; the torch backend takes `torch_module()`, the
torch module with the same Plan applied (toolchain/sync), which computes what the pruned ONNX
computes. A latency-table candidate is a `PlanSource` (the unpruned model + one Plan): the caller
hands it to whatever backend it holds and never converts it itself.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Protocol

import onnx

from graphs.errors import InputError
from graphs.onnx_io import require_input_shape


class ModelSource(Protocol):
    def onnx_bytes(self) -> bytes:
        """The serialized ONNX model."""

    def torch_module(self) -> Any:
        """The torch nn.Module computing what the ONNX computes (eval mode, on the CPU)."""

    def input_shape(self) -> list[int]:
        """(N, C, H, W...) of the single image input, N as exported."""


class OnnxSource:
    """An ONNX model (bytes, path or ModelProto); its torch module is rebuilt from the spec the export
    recorded, holding the ONNX's own values (toolchain.torch_source.torch_module_for)."""

    def __init__(self, model: bytes | bytearray | str | os.PathLike | onnx.ModelProto):
        if isinstance(model, onnx.ModelProto):
            self._proto, self._bytes = model, None
        elif isinstance(model, (bytes, bytearray)):
            self._proto, self._bytes = None, bytes(model)
        else:
            path = Path(model)
            if not path.is_file():
                raise InputError(f"ONNX file not found: {path}")
            self._proto, self._bytes = None, path.read_bytes()
        self._module = None

    def proto(self) -> onnx.ModelProto:
        if self._proto is None:
            try:
                self._proto = onnx.load_from_string(self._bytes)
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
                raise InputError(f"not a readable ONNX model ({type(e).__name__})") from None
        return self._proto

    def onnx_bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = self._proto.SerializeToString()
        return self._bytes

    def torch_module(self):
        if self._module is None:
            from toolchain.torch_source import torch_module_for

            self._module, _ = torch_module_for(self.proto())
            self._module.eval()
        return self._module

    def input_shape(self) -> list[int]:
        return require_input_shape(self.proto(), "the ONNX model")

    def __getstate__(self):  # Ray ships sources to workers: bytes travel, caches do not
        return {"_proto": None, "_bytes": self.onnx_bytes(), "_module": None}


class PlanSource:
    """The unpruned model `base` with `plan` applied: surgery for the ONNX, sync for the torch module."""

    def __init__(self, base: OnnxSource, plan, analysis=None):
        self.base, self.plan, self.analysis = base, plan, analysis
        self._pruned = None

    def _apply(self):
        if self._pruned is None:
            from graphs.surgery import apply_plan

            # check=False: the runtime's own load is the check for the many throw-away candidates
            self._pruned = apply_plan(self.base.proto(), self.plan, analysis=self.analysis, check=False)
        return self._pruned

    def onnx_bytes(self) -> bytes:
        return self._apply()[0].SerializeToString()

    def torch_module(self):
        from toolchain.sync import apply_edits

        module = copy.deepcopy(self.base.torch_module())
        return apply_edits(module, self._apply()[1]).eval()

    def input_shape(self) -> list[int]:
        return self.base.input_shape()

    def __getstate__(self):
        return {"base": self.base, "plan": self.plan, "analysis": None, "_pruned": None}


class PrunedDirSource:
    """A `compress prune` output directory: DIR/model.onnx, and the torch module its weights rebuild."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.onnx = OnnxSource(self.directory / "model.onnx")

    def onnx_bytes(self) -> bytes:
        return self.onnx.onnx_bytes()

    def torch_module(self):
        from toolchain.pruned_dir import load_pruned_module

        return load_pruned_module(self.directory)

    def input_shape(self) -> list[int]:
        return self.onnx.input_shape()


class ModuleSource:
    """A torch module alone (no ONNX): for the torch backend."""

    def __init__(self, module, input_shape):
        self.module, self.shape = module, [int(d) for d in input_shape]

    def onnx_bytes(self) -> bytes:
        raise InputError("this backend runs ONNX, and the model is a torch module only: export it first")

    def torch_module(self):
        return self.module

    def input_shape(self) -> list[int]:
        return list(self.shape)


class EngineSource:
    """A serialized TensorRT engine built earlier (a `compress build` artifact): only TensorRT runs it."""

    def __init__(self, engine: bytes, input_shape):
        self.engine, self.shape = bytes(engine), [int(d) for d in input_shape]

    def onnx_bytes(self) -> bytes:
        raise InputError("a TensorRT engine is not an ONNX model: run it with --backend tensorrt")

    def torch_module(self):
        raise InputError("a TensorRT engine has no torch module: run it with --backend tensorrt")

    def input_shape(self) -> list[int]:
        return list(self.shape)


def as_source(model) -> ModelSource:
    """Anything a loader accepts -> a ModelSource: a `compress prune` directory becomes PrunedDirSource;
    ONNX bytes, an .onnx path and a ModelProto become OnnxSource."""
    if hasattr(model, "onnx_bytes") and hasattr(model, "torch_module"):
        return model
    if isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
        return PrunedDirSource(model)
    return OnnxSource(model)


def onnx_traits(data: bytes) -> tuple[bool, bool]:
    """(has FP16 tensors, has QDQ nodes): the precision an ONNX already carries."""
    m = OnnxSource(data).proto()
    f16 = onnx.TensorProto.FLOAT16
    fp16 = any(i.type.tensor_type.elem_type == f16 for i in m.graph.input) or \
        any(t.data_type == f16 for t in m.graph.initializer)
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
    return fp16, qdq


def onnx_at_precision(data: bytes, precision: str, convert_fp16: bool, tensorrt: bool, seed: int = 0) -> bytes:
    """The ONNX a loader runs at `precision`: FP16 ONNX (when the runtime has no FP16 switch of its own),
    QDQ with seeded-input ranges for INT8 timing (ranges do not change which kernels run); a model
    that already carries the precision is used as it is (a build's artifact)."""
    if precision == "fp32":
        return data
    fp16, qdq = onnx_traits(data)
    if precision == "int8" and not qdq:
        from calib.qdq import quantize_for_timing

        return quantize_for_timing(data, seed=seed, for_tensorrt=tensorrt)
    if precision == "fp16" and convert_fp16 and not fp16:
        from calib.fp16 import to_fp16_bytes

        return to_fp16_bytes(data)
    return data
