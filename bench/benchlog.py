"""Bench logs: each bench script writes its own log under bench/results/, so every figure in the
README comes with the run that printed it.

    with logged("analyze_surgery", args.log):
        print(...)            # goes to the terminal and to the log

The log starts with the date (UTC), the git commit (marked "+ uncommitted changes" when the tree
differs from it; a second line when the checkout moved during the run), the host's CPU count and
the exact command line. It is written only when the block
finishes without an exception, through a temporary file and a rename: a crashed or interrupted run
never leaves a half-written log or replaces a good one.
"""
from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout, installed or not

from graphs.atomic import write_text  # noqa: E402
RESULTS = ROOT / "bench" / "results"


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def commit() -> str:
    """The checked-out commit, and whether tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" + uncommitted changes" if dirty else "")


def header(argv: list[str] | None = None) -> str:
    argv = sys.argv if argv is None else argv
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    command = "python " + shlex.join([os.path.relpath(argv[0], ROOT) if argv else "?"] + list(argv[1:]))
    return (f"# date: {now}\n# commit: {commit()}\n# host: {os.cpu_count()} CPUs, this process may use {len(os.sched_getaffinity(0))}\n"
            f"# command: {command}\n# load average (1, 5, 15 min): {load()} at the start\n\n")


def load() -> str:
    """The host's load average: latency figures measured while others compute must say so."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)


def log_path(name: str, override: str | None = None) -> Path | None:
    """bench/results/NAME.txt, or the --log override ("-": no log)."""
    if override == "-":
        return None
    return Path(override) if override else RESULTS / f"{name}.txt"


@contextmanager
def logged(name: str, override: str | None = None):
    """Tee stdout into the log of NAME; write it (atomically) only if the block succeeds."""
    path = log_path(name, override)
    if path is None:
        yield None
        return
    head = header()
    captured: list[str] = []

    class _Sink:
        def write(self, text):
            captured.append(text)

        def flush(self):
            pass

    real = sys.stdout
    sys.stdout = _Tee(real, _Sink())
    try:
        yield path
    finally:
        sys.stdout = real
    head = head.replace(" at the start\n", f" at the start, {load()} at the end\n", 1)
    end = commit()
    if end not in head:  # the checkout moved during the run: say so, the figures may mix both
        lines = head.split("\n")
        lines.insert(2, f"# commit at the end: {end} (the tree changed during the run)")
        head = "\n".join(lines)
    write_atomic(path, head + "".join(captured))
    print(f"log: {os.path.relpath(path, ROOT)}")


def store_line(store: str | None) -> str:
    """What a run reuses: a latency store given with --store may already hold tables (a re-run then
    measures only what is missing), and the log must say so."""
    import sqlite3

    if store is None:
        return "store: a fresh temporary store (every table measured in this run)"
    path = Path(store)
    if not path.exists():
        return f"store: {store} (new: every table measured in this run)"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            rows, models = db.execute("SELECT COUNT(*), COUNT(DISTINCT model_sha256) FROM measurements").fetchone()
        except sqlite3.OperationalError:
            rows, models = 0, 0
    return (f"store: {store} (reused: {rows} measurements of {models} models already in it; "
            "tables found there are not measured again)")


def attempt_line(row: dict) -> str:
    """One row of `prune --budget`'s history (toolchain/refine.py): a solver target's plan, or a plan
    measured between two of them (no target)."""
    target = f"target {row['target']:.3f}" if row.get("target") is not None else "between two plans"
    return (f"    attempt {row['attempt']}: {target}, predicted {row['predicted']:.3f}, measured "
            f"{row['ratio']:.3f} +- {row['ratio_se']:.3f}, params {row['params']:,}")
