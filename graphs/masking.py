"""The reference for a model pruned without its torch source: the original graph, channels masked.

Zeroing, in every initializer surgery slices, the entries it would cut leaves the pruned channels
contributing nothing downstream (their filters, BatchNorm terms and the consumers' input weights are
zero), so the original graph computes what the pruned graph computes, by ONNX Runtime's semantics,
with no torch module involved. Removed residual blocks are removed from the reference first.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from graphs.errors import InputError
from graphs.parity import Parity, parity, run_onnx
from graphs.plan import Plan
from graphs.surgery import Edits, apply_plan

__all__ = ["masked_original", "masked_parity"]


def masked_original(model: onnx.ModelProto, edits: Edits) -> onnx.ModelProto:
    """A copy of `model` whose sliced float initializers hold zeros where surgery cut."""
    masked = onnx.ModelProto.FromString(model.SerializeToString())
    for init in masked.graph.initializer:
        cuts = edits.slices.get(init.name)
        if not cuts or init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        values = numpy_helper.to_array(init).copy()
        for axis, kept in cuts:
            drop = np.ones(values.shape[axis], bool)
            drop[np.asarray(kept, dtype=np.int64)] = False
            index = [slice(None)] * values.ndim
            index[axis] = drop
            values[tuple(index)] = 0
        init.CopyFrom(numpy_helper.from_array(values, init.name))
    return masked


def masked_parity(original: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, input_shape,
                  seed: int = 0) -> Parity:
    """Pruned graph vs the original with the same channels masked (and the same blocks removed), on
    a seeded normal input; the relative per-output rule of graphs.parity."""
    reference = original
    if plan.remove:
        reference, _ = apply_plan(original, Plan(channels={}, remove=list(plan.remove)))
    _, edits = apply_plan(original, Plan(channels=plan.channels, remove=list(plan.remove), round_to=1))
    if edits.reinit:
        raise InputError("a removed layer whose next conv is re-initialised cannot be checked without the "
                         "torch source (the masked original has no such conv)")
    shape = [int(d) or 1 for d in input_shape]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    feed = {pruned.graph.input[0].name: x}
    return parity(run_onnx(masked_original(reference, edits), feed), run_onnx(pruned, feed))
