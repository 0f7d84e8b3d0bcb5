"""The control entry: an unchanged copy of the model, timed against the reference like any table
entry, must read 1.0.

Seen on the 2-core VM the accuracy bench runs on: tables profiled in a process that had just trained
a model read every entry a few percent low (pretrained Lite0, seed 1: the median entry 0.967 of a
table of the same model profiled minutes later in a fresh process; no cause found). The per-layer
model sums some 25 group savings, so that uniform offset moved plan predictions by 30-70% (a plan
predicted at 0.184 measured 0.489), while the same table with every entry divided by 0.967 predicted
the three plans within 4% (`bench/results/table_offset_replay.txt`). So each profiling session that
measures anything first times the identity plan, to a quarter of an entry's standard error; when it
is off 1.0 by more than CONTROL_SIGMAS of its standard errors, every entry that session measures is
divided by it, and the table says so. Entries stored by earlier sessions were corrected by theirs.

The check is timed again after the session's last entry, because one reading can catch a passing state:
in the 2-core bench run of 2026-12-03 (`bench/results/table_control_replay.txt`) four readings were
0.983-0.987, and the one taken right after a fine-tuning run read 0.964 while that session's entries
were not offset (as timed, they predicted its plans within 2-10%; divided, they were 6-64% off). So an
offset is divided out only when both readings agree within their noise; when they do not, the
session's entries are stored as timed and the table says the host drifted.

Training is not the only history that does it. In the 2-stage Lite0 bench rows (a process that had profiled,
pruned and measured stage 1, and trained earlier seeds) twelve of thirteen second stages read 0.940-0.971
(the other 0.989, then 0.961 after its entries); a `compress prune --stages 2` process that trained nothing read
0.962 at stage 2; a fresh process profiling that stage-1 model (pruned again with `--budget 0.675`) read 0.989
and 0.998 (`bench/results/control_second_stage.txt`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from graphs.plan import Plan
from toolchain.latency.backends.source import PlanSource
from toolchain.latency.config import ProfileConfig
from toolchain.latency.measure import interleaved_ratio

# Timed this many times longer than an entry, and extended to this many times smaller an error: an
# offset error of e moves a many-group plan's prediction by roughly ten times e.
CONTROL_RUNS = 8
CONTROL_PRECISION = 4
CONTROL_SIGMAS = 2.0


@dataclass(frozen=True)
class Control:
    ratio: float  # the unchanged model's time / the reference's, median over interleaved pairs
    se: float     # its robust standard error
    end: Control | None = None  # the same check timed after the session's entries (None: not yet)

    @property
    def steady(self) -> bool:
        """Whether the reading after the session agrees with the one before it, within their noise."""
        return self.end is None or abs(self.ratio - self.end.ratio) <= CONTROL_SIGMAS * math.hypot(self.se, self.end.se)

    @property
    def offset_seen(self) -> bool:
        """Whether the first reading is told from timing noise (its entries were divided by it as they were stored)."""
        return abs(self.ratio - 1.0) > CONTROL_SIGMAS * self.se

    @property
    def applied(self) -> bool:
        """Whether the offset is told from timing noise and held through the session, and so divided out."""
        return self.steady and self.offset_seen

    def as_dict(self) -> dict:
        end = None if self.end is None else {"ratio": self.end.ratio, "se": self.end.se}
        return {"ratio": self.ratio, "se": self.se, "end": end, "steady": self.steady, "applied": self.applied}

    def correct(self, values: dict) -> dict:
        return {**values, "ratio": values["ratio"] / self.ratio} if self.applied else values

    def warning(self) -> str | None:
        if not self.steady:
            return (f"an unchanged copy of the model timed {self.ratio:.3f} +- {self.se:.3f} of the reference before "
                    f"this session's entries and {self.end.ratio:.3f} +- {self.end.se:.3f} after them: the host "
                    f"drifted, so they are stored as timed, not corrected (profile --fresh in a fresh process on an "
                    f"idle host re-times them)")
        if not self.applied:
            return None
        return (f"an unchanged copy of the model timed {self.ratio:.3f} +- {self.se:.3f} of the reference: "
                f"this session's entries were divided by it (earlier work in this process, such as training or an "
                f"earlier pruning stage, or a busy host can do this; profiling in a fresh process avoids it)")


def time_control(backend, reference_runner, base, analysis, config: ProfileConfig) -> Control:
    """Time the identity plan (surgery applied, nothing removed) against the session's reference."""
    target_se = config.target_se / CONTROL_PRECISION if config.target_se else None
    with backend.prepare(PlanSource(base, Plan(), analysis), batch=config.batch) as runner:
        result = interleaved_ratio(runner, reference_runner, warmup=config.warmup, runs=CONTROL_RUNS * config.runs,
                                   pause_s=config.pause_s, target_se=target_se,
                                   max_runs=3 * CONTROL_RUNS * config.runs, only_if_reachable=True)
    return Control(float(result.ratio), float(result.ratio_se))
