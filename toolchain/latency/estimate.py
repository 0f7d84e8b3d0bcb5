"""Estimates for the entries a reduced table left unmeasured, from the table's per-layer model.

The solvers weigh every group width and block by its table entry (SP-LAMP's knapsack); a reduced
table (lut.py) measures only the entries that active selection chose, so the rest are filled with
what the fitted per-layer model predicts for them, on the same grid a full table samples. They are
kept apart from the measured entries (Table.estimated_*) and never fitted on.
"""
from __future__ import annotations

from graphs.deps import Analysis
from toolchain.latency.config import ProfileConfig
from toolchain.latency.grid import group_grid
from toolchain.latency.predict import Predictor
from toolchain.latency.table import Table


def fill_estimates(table: Table, analysis: Analysis, config: ProfileConfig, predictor: Predictor) -> Table:
    """The table with every unmeasured grid width and block estimated by `predictor` (fitted on it)."""
    table.estimated_groups, table.estimated_blocks = {}, {}
    if config.groups:
        for g in analysis.groups:
            if not g.prunable:
                continue
            missing = [k for k in group_grid(g, config.round_to, config.points) if k not in table.groups.get(g.id, {})]
            for k in missing:
                table.estimated_groups.setdefault(g.id, {})[k] = predictor.predict({g.id: k}, []).corrected
    if config.blocks:
        for b in analysis.blocks:
            if b.id not in table.blocks:
                table.estimated_blocks[b.id] = predictor.predict({}, [b]).corrected
    return table
