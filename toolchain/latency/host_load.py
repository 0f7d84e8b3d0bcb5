"""How much of the CPU other processes took while a latency was timed, and what to do about it.

Interleaving (measure.py) cancels load that hits the candidate and the reference alike, but a burst
of another job during one table entry still skews that entry: on this 2-core host a test file run
beside a ResNet-20 profile put one halved inner conv at 0.705 of the whole model, and the plan built
on that table measured 0.964 against a prediction of 0.49. So a timing taken while other processes
used more than BUSY_LIMIT of the machine is taken again after a pause, and the quieter one is kept.
A host that stays busy gets no more retries (PATIENCE) and a warning instead: the user is told to
re-run on an idle machine, rather than paying with time for a load that will not go away.

Timings a Ray worker takes (distributed.py) read the worker machine's load the same way; they are not
re-timed (the worker holds the device only for its task), but they count towards the same warning.

Linux only (/proc/stat); elsewhere nothing is checked.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")

BUSY_LIMIT = 0.25  # share of all the machine's cores that other processes may use during a timing
WAIT_S = 3.0  # pause before timing a busy entry again
PATIENCE = 3  # busy timings in a row after which retrying stops: the load is not a burst


def _cpu_seconds() -> tuple[float, int] | None:
    """(busy CPU seconds of the whole machine since boot, cores counted), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    fields = lines[0].split() if lines and lines[0].startswith("cpu ") else []
    if len(fields) < 8 or not cores:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (user + nice + system + irq + softirq + steal) / ticks, cores


def _own_seconds() -> float:
    t = os.times()  # every thread of this process (onnxruntime's included) and its waited-for children
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """Started on creation; `share()` is the CPU other processes used since, as a fraction of the machine."""

    def __init__(self):
        self._machine = _cpu_seconds()
        self._own = _own_seconds()
        self._wall = time.monotonic()

    def share(self) -> float | None:
        machine = _cpu_seconds()
        wall = time.monotonic() - self._wall
        if machine is None or self._machine is None or wall <= 0:
            return None
        others = (machine[0] - self._machine[0]) - (_own_seconds() - self._own)
        return min(1.0, max(0.0, others / (wall * machine[1])))


@dataclass
class LoadGuard:
    """Times through `measure`, re-timing busy entries; counts what stayed busy for `warning()`."""

    limit: float = BUSY_LIMIT
    wait_s: float = WAIT_S
    patience: int = PATIENCE
    timed: int = 0
    retried: int = 0
    busy: int = 0  # timings kept although other processes were busy throughout
    busiest: float = 0.0
    _streak: int = 0

    def measure(self, timing: Callable[[], T]) -> tuple[T, float | None]:
        """(the quietest of one or two timings, the share of the CPU others took during it)."""
        self.timed += 1
        best = None
        for attempt in range(2):
            load = OtherLoad()
            result = timing()
            share = load.share()
            if best is None or (share is not None and share < best[1]):
                best = (result, share)
            if share is None or share <= self.limit:
                self._streak = 0
                return result, share
            self._streak += 1
            if attempt == 1 or self._streak > self.patience:
                break
            self.retried += 1
            time.sleep(self.wait_s)
        self.busy += 1
        self.busiest = max(self.busiest, best[1] or 0.0)
        return best

    def note(self, share: float | None) -> None:
        """Counts a timing taken elsewhere (a Ray worker's), with the share it read there."""
        self.timed += 1
        if share is not None and share > self.limit:
            self.busy += 1
            self.busiest = max(self.busiest, share)

    def warning(self) -> str | None:
        """One line for the user when some timings stayed busy, else None."""
        if not self.busy:
            return None
        return (f"{self.busy} of {self.timed} latency timings ran while other processes used more than "
                f"{self.limit:.0%} of the CPU (up to {self.busiest:.0%}); their figures may be off: "
                f"re-run on an idle machine (profile --fresh re-times a table)")


def busy_note(share: float | None, limit: float = BUSY_LIMIT) -> str:
    """A suffix for a measurement's log line when other processes were busy during it."""
    if share is None or share <= limit:
        return ""
    return f" (other processes used {share:.0%} of the CPU meanwhile: re-run on an idle machine to trust it)"
