"""A deterministic latency table for solver tests: every entry is the fraction of MACs the change keeps.

A test fixture, never a measurement: it lets a test know which plans a solver must give (real tables
come from `compress profile` and carry the host's noise)."""
from graphs.deps import Analysis
from toolchain.latency.predict import LayerMap, mac_saving
from toolchain.latency.table import Table
from toolchain.solve.budget import width_options


def mac_table(analysis: Analysis, blocks, width_share: float = 1.0, block_overhead: float = 0.0) -> Table:
    """Narrowing a group saves `width_share` of its MAC share; removing a block its MACs plus
    `block_overhead` of per-op time (0.5 and 0.04 look like resnet20's table on a CPU: depth and
    width both pay, so a joint plan mixes them)."""
    layers = LayerMap.build(analysis)
    table = Table(base_ms=1.0, widths={g.id: g.channels for g in analysis.groups})
    for g in analysis.groups:
        if g.prunable:
            table.groups[g.id] = {int(k): 1.0 - width_share * mac_saving(layers, {g.id: k / g.channels})
                                  for k in width_options(g, 8)[:-1]}
    for b in blocks:
        table.blocks[b.id] = 1.0 - mac_saving(layers, {}, set(b.nodes)) - block_overhead
    return table
