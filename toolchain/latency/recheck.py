"""Re-timing a stored table's anchors before it is used again.

A table is a set of ratios to the unpruned model, but the ratios themselves move as the host drifts
(frequency, cache neighbours, a runtime's thread placement): on the 2-core AVX2 machine a table profiled
in an earlier session fitted its width scale to 0.76 where a fresh one fitted 0.99, and `uniform-0.50` measured
0.526 then and 0.478 later. The per-layer model (predict.py) takes its two scales from the anchors, so
re-timing only the anchors (4 entries, not the whole grid) brings an old table's level back to today's
host; the single entries keep their relative shape. Anchors older than `ProfileConfig.recheck_after_s`
are re-timed, and a move larger than `DRIFT_WARN` is reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

# An anchor is timed to a standard error of about 0.5% (lut.PRECISE); a move ten times that is drift.
DRIFT_WARN = 0.05


@dataclass(frozen=True)
class AnchorDrift:
    """One anchor, as stored and as re-timed now."""

    item: str
    stored: float
    now: float
    age_s: float

    @property
    def change(self) -> float:
        """Relative change of the ratio: -0.09 is a ratio 9% lower now than when it was stored."""
        return self.now / self.stored - 1.0


def stale_anchors(anchors: list, stored_row, recheck_after_s: float | None) -> list:
    """The anchor candidates whose stored row is older than `recheck_after_s` (None: never re-timed)."""
    if recheck_after_s is None:
        return []
    now = time.time()
    rows = [(c, stored_row(c)) for c in anchors]
    return [c for c, row in rows if row is not None and now - row["created_at"] >= recheck_after_s]


def retime(anchors: list, stored_row, measure) -> list[AnchorDrift]:
    """Measure `anchors` again (their rows are replaced) and say how far each moved."""
    before = {c.item: stored_row(c) for c in anchors}
    measure(anchors)
    now = time.time()
    drifts = []
    for c in anchors:
        old, new = before[c.item], stored_row(c)
        if old and new and old["ratio"] and new["ratio"]:
            drifts.append(AnchorDrift(c.item, old["ratio"], new["ratio"], now - old["created_at"]))
    return drifts


def _age(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def drift_warning(drifts: list[AnchorDrift]) -> str | None:
    """One line when an anchor moved more than DRIFT_WARN since it was stored; None otherwise."""
    moved = [d for d in drifts if abs(d.change) > DRIFT_WARN]
    if not moved:
        return None
    worst = max(moved, key=lambda d: abs(d.change))
    return (f"the host's timing drifted since this table was measured ({_age(worst.age_s)} ago): anchor "
            f"{worst.item} {worst.stored:.3f} -> {worst.now:.3f} of the unpruned latency"
            f"{f' ({len(moved)} anchors moved > {DRIFT_WARN:.0%})' if len(moved) > 1 else ''}; the anchors were "
            "re-timed and the table re-calibrated to them; `compress profile --fresh` re-measures every entry")
