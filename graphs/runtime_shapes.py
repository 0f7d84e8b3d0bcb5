"""Shapes read at run time (Shape -> Gather -> ... -> Reshape) that carry a channel count.

Exporters compute reshape targets from `Shape` of a tensor (x.view(B, C, H, W) with C = x.size(1)). When
the count read from x sizes a tensor that holds x's channels (a channel shuffle), pruning x keeps them
consistent; when it sizes another tensor, pruning x breaks the pruned graph, so x's channels freeze.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from graphs.channels import Layout

if TYPE_CHECKING:
    from graphs.deps import Tracer

__all__ = ["freeze_foreign_channel_counts"]

SHAPE_MATH = {"Concat", "Add", "Sub", "Mul", "Div", "Floor", "Ceil"}  # any operand carries the value on
SHAPE_MOVE = {"Gather", "Unsqueeze", "Squeeze", "Cast", "Slice", "Identity"}  # carry their data input on


def freeze_foreign_channel_counts(t: "Tracer", node: onnx.NodeProto, layout: Layout | None) -> None:
    """A reshape target computed at run time from another tensor x's channel count is fine when the data
    holds x's channels (a channel shuffle); otherwise pruning x would make the pruned graph reshape the
    data to a width it does not have (ultralytics' Attention: v.reshape(B, C, H, W), C from its input)."""
    held = set() if layout is None else set(np.ravel(layout.ids).tolist())
    for shape_node in _shape_sources(t, node.input[1]):
        source = t.layout(shape_node.input[0])
        if source is not None and not set(np.ravel(source.ids).tolist()) <= held:
            t.freeze(source, f"Reshape {node.name} takes the channel count of {shape_node.input[0]} for another tensor")


def _shape_sources(t: "Tracer", name: str) -> list[onnx.NodeProto]:
    """Shape nodes whose channel entries flow into tensor `name` through shape arithmetic."""
    found, frontier, seen = [], [name], set()
    while frontier:
        producer = t.producer(frontier.pop())
        if producer is None or producer.name in seen:
            continue
        seen.add(producer.name)
        if producer.op_type == "Shape":
            found.append(producer)
        elif producer.op_type == "Gather" and t.producer(producer.input[0]) is not None \
                and t.producer(producer.input[0]).op_type == "Shape":
            shape_node = t.producer(producer.input[0])
            source, index = t.layout(shape_node.input[0]), t.consts.value(producer.input[1])
            start = next((a.i for a in shape_node.attribute if a.name == "start"), 0)
            if source is not None and (index is None or any(
                    (int(i) + start) % source.rank in source.axes for i in np.ravel(index))):
                found.append(shape_node)
        elif producer.op_type in SHAPE_MATH:
            frontier.extend(producer.input)
        elif producer.op_type in SHAPE_MOVE:
            frontier.append(producer.input[0])
    return found
