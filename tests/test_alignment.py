"""Widths on the backend's channel block (graphs/alignment.py), one rule for the latency grid, the
solvers, the anchors and the surgery. A grouped conv whose groups are whole blocks keeps per-group
widths that divide the block: 12 of 16 channels per group fell off ORT's blocked kernels and ran slower
than the unpruned model (bench/results/grouped_alignment.txt)."""
import numpy as np
import torch
from torch import nn

from graphs.alignment import aligned_widths, round_count
from graphs.deps import analyze
from graphs.onnx_io import load_model
from graphs.plan import Plan
from graphs.surgery import apply_plan
from toolchain.export import export_onnx
from toolchain.latency.grid import group_grid
from toolchain.solve.budget import width_options


def test_the_rule():
    assert aligned_widths(64, 1, 16) == [16, 32, 48]            # a plain conv: multiples of the block
    assert aligned_widths(16, 20, 16) == [4, 8]                 # 20 groups of 16: not 12
    assert aligned_widths(16, 9, 16) == []                      # 9 groups of 16: only 16 keeps 9k aligned
    assert aligned_widths(4, 32, 16) == [1, 2, 3]               # ResNeXt's 4 per group: never on the block
    assert aligned_widths(58, 2, 8)[:3] == [4, 8, 12]           # a channel shuffle: 2 channels per unit
    assert round_count(11, 16, 20, 16) == 8 and round_count(12, 16, 20, 16) == 16  # nearest allowed; a tie keeps more
    assert [round_count(c, 8, 1, 4) for c in (5, 1, 7, 10)] == [4, 4, 8, 8]   # unchanged for plain groups


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.grouped = nn.Conv2d(64, 64, 3, padding=1, groups=4)  # 16 channels per group
        self.head = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        return self.head(torch.relu(self.grouped(torch.relu(self.stem(x)))))


def test_grid_solver_and_surgery_keep_blocked_groups_whole_blocks(tmp_path):
    path = tmp_path / "g.onnx"
    export_onnx(Grouped().eval(), (1, 3, 16, 16), path)
    model = load_model(path)
    analysis = analyze(model)
    blocked = [g for g in analysis.groups if g.prunable and g.multiplicity == 4 and g.channels == 16]
    assert blocked, [(g.id, g.channels, g.multiplicity) for g in analysis.groups]
    group = blocked[0]
    assert list(width_options(group, 16)) == [4, 8, 16]
    assert group_grid(group, 16, points=3) == [4, 8]
    pruned, edits = apply_plan(model, Plan(channels={group.id: {"count": 11}}, round_to=16), analysis=analysis)
    kept = edits.kept[group.id]
    assert len(kept) == 8  # 11 per group rounds to 8, not 12
    weights = {t.name: t for t in pruned.graph.initializer}
    assert any(np.prod(t.dims) and t.dims[0] == 32 for t in weights.values())  # 8 per group x 4 groups
