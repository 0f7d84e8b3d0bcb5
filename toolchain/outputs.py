"""Model outputs of any structure, as the flat list of tensors the ONNX graph outputs.

Detection and segmentation models return dicts (torchvision's OrderedDict {'out', 'aux'}), nested
tuples and lists (ultralytics: `(y, {'boxes', 'scores', 'feats': [p3, p4, p5]})`). The legacy ONNX
exporter writes their tensor leaves depth first, tuples/lists in order and dicts in insertion order;
`flatten_outputs` gives the same order, so leaf i of the torch output is graph output i. verify,
distillation and the build's accuracy check all compare through it, leaf by leaf.
"""
from __future__ import annotations

from typing import Any

__all__ = ["flatten_outputs", "distill_loss"]


def flatten_outputs(out: Any) -> list:
    """Tensor (or array) leaves of `out` in the exporter's order; non-tensor leaves (None, ints,
    strings) are dropped, as the exporter drops them."""
    if hasattr(out, "shape") and hasattr(out, "dtype"):  # torch.Tensor or np.ndarray: duck-typed, no torch import
        return [out]
    if isinstance(out, dict):
        return [leaf for value in out.values() for leaf in flatten_outputs(value)]
    if isinstance(out, (tuple, list)):
        return [leaf for value in out for leaf in flatten_outputs(value)]
    return []


def distill_loss(student: Any, teacher: Any):
    """Mean over output leaves of the squared error scaled by the teacher leaf's variance, so a box
    regression at pixel scale and a score map in [0, 1] weigh alike (output distillation, no labels)."""
    s_leaves, t_leaves = flatten_outputs(student), flatten_outputs(teacher)
    if len(s_leaves) != len(t_leaves) or any(a.shape != b.shape for a, b in zip(s_leaves, t_leaves)):
        raise ValueError(f"student and teacher outputs differ in structure: {len(s_leaves)} vs {len(t_leaves)} "
                         "tensors or shapes differ")
    terms = [((s - t) ** 2).mean() / (t.var() + 1e-6) for s, t in zip(s_leaves, t_leaves)]
    return sum(terms) / len(terms)
