"""Budget solvers on a real latency table where the additive sum runs out before the budget.

tests/data/lite0_64_ort_table.json is EfficientNet-Lite0's measured table (64x64 input, ORT CPU, see
its "source"). Its single-group savings overlap so much that SP-LAMP's additive sum reaches its
floor (~0.05) while the per-layer model still predicts ~0.53: the knapsack alone cannot land near
budget 0.5 (it gave 0.543 there, and 0.612 / 0.641 at the next two targets of a live run). Greedy
descent on the per-layer model (toolchain/solve/descend.py) must take it the rest of the way.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import timm

from graphs.deps import analyze
from toolchain.export import export_onnx
from toolchain.latency.anchors import Anchor
from toolchain.latency.table import Table
from toolchain.solve.budget import solve_filter, solve_joint

TABLE = Path(__file__).parent / "data" / "lite0_64_ort_table.json"


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    model = export_onnx(timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), (1, 3, 64, 64),
                        tmp_path_factory.mktemp("lite0") / "lite0.onnx")
    analysis = analyze(model)
    raw = json.loads(TABLE.read_text())
    table = Table(base_ms=raw["base_ms"], widths=raw["widths"],
                  groups={g: {int(k): r for k, r in v.items()} for g, v in raw["groups"].items()},
                  blocks=raw["blocks"],
                  anchors={n: Anchor(a["kept"], a["removed"], a["ratio"]) for n, a in raw["anchors"].items()})
    assert set(table.groups) <= {g.id for g in analysis.groups}, "the export's groups are the table's"
    rng = np.random.default_rng(0)
    scores = {g.id: rng.random(g.channels) for g in analysis.groups}
    return analysis, table, scores


# Filter pruning alone is predicted to reach 0.539 here (joint: 0.374, removing blocks too).
@pytest.mark.parametrize("mode,budget", [("joint", 0.45), ("joint", 0.5), ("joint", 0.55), ("filter", 0.55),
                                         ("filter", 0.6), ("filter", 0.65)])
def test_the_solver_lands_within_three_percent_below_the_budget(lite0, mode, budget):
    analysis, table, scores = lite0
    if mode == "joint":
        decision = solve_joint(analysis, table, analysis.blocks, scores, budget, round_to=16)
    else:
        decision = solve_filter(analysis, table, scores, budget, round_to=16)
    assert budget * 0.97 <= decision.predicted.corrected <= budget + 1e-3
