"""The measurement protocol: warm up, run many times, keep robust statistics.

Absolute times on a shared 2-core host drift up to 25% between runs (PLATFORM.md), so tables store
a candidate's time relative to a reference run interleaved with it, plus the reference's absolute
time: drift that hits both cancels. The ratio is the median of per-pair ratios (see interleaved_ratio).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from graphs.errors import InputError

# Interleaved candidate-vs-reference defaults (bench/measure_noise.py gives the figures behind them):
# 60 runs give a ~1 point spread on a quiet host; when other processes load it (se 0.05-0.09 seen),
# runs extend up to 4x (max_runs None) until the ratio's standard error is <= 0.01: a loaded host pays
# with time, not accuracy.
INTERLEAVED = dict(warmup=5, runs=60, pause_s=0.1, target_se=0.01, max_runs=None)


@dataclass(frozen=True)
class Stats:
    """Robust summary of one series of inference times (times in ms; cv = std / mean, unitless)."""
    median: float
    p90: float
    mean: float
    std: float
    count: int
    cv: float

    @classmethod
    def from_times(cls, times_ms) -> "Stats":
        t = np.asarray(times_ms, dtype=np.float64)
        if t.size == 0:
            raise ValueError("no times to summarise")
        mean, std = float(t.mean()), float(t.std())
        return cls(median=float(np.median(t)), p90=float(np.percentile(t, 90)), mean=mean, std=std,
                   count=int(t.size), cv=std / mean if mean > 0 else 0.0)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RatioResult:
    ratio: float             # median over pairs of candidate_i / reference_i (adjacent calls)
    candidate: Stats
    reference: Stats
    ratio_of_medians: float  # median(candidate) / median(reference), for comparison
    ratio_se: float          # robust standard error of `ratio`: re-measure when it is large


def time_runner(runner, warmup: int = 10, runs: int = 200, pause_s: float = 0.0) -> Stats:
    """Time `runs` calls after `warmup` untimed ones."""
    if runs < 1 or warmup < 0:
        raise InputError(f"bad protocol: warmup={warmup} runs={runs}")
    for _ in range(warmup):
        runner.run()
    times = []
    for _ in range(runs):
        times.append(runner.timed_run())
        if pause_s:
            time.sleep(pause_s)
    return Stats.from_times(times)


def _ratio_se(pair_ratios: np.ndarray) -> float:
    """Standard error of a median, from the MAD: robust to the load bursts the median ignores."""
    mad = float(np.median(np.abs(pair_ratios - np.median(pair_ratios))))
    return 1.2533 * 1.4826 * mad / np.sqrt(pair_ratios.size)


def interleaved_ratio(candidate, reference, warmup: int = INTERLEAVED["warmup"],
                      runs: int = INTERLEAVED["runs"], pause_s: float = INTERLEAVED["pause_s"],
                      target_se: float | None = INTERLEAVED["target_se"],
                      max_runs: int | None = INTERLEAVED["max_runs"], rewarm: bool | None = None,
                      only_if_reachable: bool = False) -> RatioResult:
    """Alternate candidate and reference call by call (who goes first alternates too).

    The pause after every call lets an onnxruntime session's worker threads stop spinning before the
    other session runs; without it, on 2 cores, each session steals the other's core and times inflate
    ~2x, pulling ratios toward 1. Trade-off: the sleep is outside the timed region, so it never enters
    a measurement, but it sets the wall-clock cost (2 * runs * pause_s, 12 s at the defaults, whatever
    the model's size), and a model that has just slept runs from cold caches: a 0.4-0.7 ms CNN took
    0.8-0.9 ms after each 100 ms pause, an additive cost that pulls small models' ratios toward 1
    (a 4x-MAC pair: 2.0-2.2 cold, 2.7-2.8 rewarmed). So a timed call can follow one untimed call of
    the same runner (`rewarm`; its own spinning threads do not hurt it); by default only for calls
    under pause_s / 10 (10 ms), where the extra call costs little wall time.
    With `target_se` (None: exactly `runs`), runs continue in chunks, up to `max_runs`, until the
    ratio's standard error is below it: a loaded host then pays with time instead of with accuracy.
    `only_if_reachable` stops extending as soon as the standard error, shrinking as 1/sqrt(runs),
    could not reach the target within max_runs: a latency table has many entries, and on a
    drifting host half of resnet50's ran to the cap without reaching it.
    """
    if runs < 1 or warmup < 0:
        raise InputError(f"bad protocol: warmup={warmup} runs={runs}")
    max_runs = max(max_runs or 4 * runs, runs)
    cand, ref, last = [], [], {}  # last: each runner's latest time (ms), for the rewarm rule
    i, goal = 0, warmup + runs
    while True:
        while i < goal:
            pair = ((candidate, cand), (reference, ref)) if i % 2 == 0 else ((reference, ref), (candidate, cand))
            for runner, sink in pair:
                if rewarm or (rewarm is None and pause_s and last.get(id(runner), 0) < pause_s * 100):
                    runner.run()
                t = last[id(runner)] = runner.timed_run()
                if i >= warmup:
                    sink.append(t)
                if pause_s:
                    time.sleep(pause_s)
            i += 1
        c_t, r_t = np.asarray(cand), np.asarray(ref)
        # The median of per-pair ratios, not the ratio of medians: load from other processes comes in
        # bursts, and a burst over part of the run moves each median by a different amount, while
        # adjacent calls see the same load (bench/measure_noise.py: resnet18 vs itself on a loaded
        # host, worst of 8 repetitions 3.9 points off vs 14.5 for the ratio of medians).
        pair_ratios = c_t / r_t
        se = _ratio_se(pair_ratios)
        if target_se is None or se <= target_se or len(cand) >= max_runs:
            break
        if only_if_reachable and len(cand) * (se / target_se) ** 2 > max_runs:
            break
        goal = min(goal + max(runs // 2, 1), warmup + max_runs)
    c, r = Stats.from_times(c_t), Stats.from_times(r_t)
    return RatioResult(ratio=float(np.median(pair_ratios)), candidate=c, reference=r,
                       ratio_of_medians=c.median / r.median, ratio_se=se)
