"""The graph side's one criterion: L1 filter norms read from the initializers, the default that
surgery uses when a Plan asks for a `count` of channels and names no criterion (torch-side criteria
live in toolchain/criteria)."""
from __future__ import annotations

import numpy as np
import onnx

from graphs.deps import Analysis


def l1_scores(analysis: Analysis) -> dict[str, np.ndarray]:
    """L1 norm of each unit's filters, summed over the group's producers (the default criterion)."""
    values = {init.name: init for init in analysis.model.graph.initializer}
    per_root: dict[int, float] = {}
    for sl in analysis.slices:
        if sl.role != "out" or sl.init not in values:
            continue
        weight = onnx.numpy_helper.to_array(values[sl.init])
        norms = np.abs(np.moveaxis(weight, sl.axis, 0)).reshape(weight.shape[sl.axis], -1).sum(axis=1)
        for r, v in zip(analysis.roots[sl.ids].tolist(), norms.tolist()):
            per_root[r] = per_root.get(r, 0.0) + v
    return {g.id: np.array([per_root.get(int(r), 0.0) for r in g.classes]) for g in analysis.groups}
