"""Stored anchors older than recheck_after_s are re-timed before a table is used (recheck.py): the host's
timing drifts, and the anchors set the per-layer model's level. Real measurements on resnet20."""
import json
import sqlite3
import time

import pytest
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.latency import lut
from toolchain.latency.config import ProfileConfig
from toolchain.latency.control import Control
from toolchain.latency.lut import profile
from toolchain.latency.recheck import AnchorDrift, drift_warning

FAST = dict(points=1, runs=3, warmup=1, round_to=8)
HOURS = 3600.0


def anchor_rows(store) -> dict:
    with sqlite3.connect(store) as db:
        return {item: (ratio, created) for item, ratio, created in
                db.execute("SELECT item, ratio, created_at FROM measurements WHERE kind = 'anchor'")}


def other_rows(store) -> dict:
    with sqlite3.connect(store) as db:
        return {r[:3]: r[3:] for r in
                db.execute("SELECT kind, item, k, ratio, created_at FROM measurements WHERE kind != 'anchor'")}


def spoil(store, item: str, age_h: float, ratio: float | None = None) -> None:
    """What an old table looks like: the anchor stored `age_h` ago, at `ratio` if given. A ratio of 5
    (five times slower than the unpruned model) is one no re-timing gives back, however loaded the host."""
    with sqlite3.connect(store) as db:
        db.execute("UPDATE measurements SET ratio = coalesce(?, ratio), created_at = created_at - ? "
                   "WHERE kind = 'anchor' AND item = ?", (ratio, age_h * HOURS, item))


@pytest.fixture(scope="module")
def stored(resnet20_onnx, tmp_path_factory):
    """A resnet20 table, and a copy of its store to spoil per test."""
    path = tmp_path_factory.mktemp("recheck") / "lut.sqlite"
    profile(str(resnet20_onnx), str(path), ProfileConfig(**FAST))
    return path


@pytest.fixture
def store(stored, tmp_path):
    copy = tmp_path / "lut.sqlite"
    with sqlite3.connect(stored) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return copy


def test_old_anchors_are_retimed_young_ones_and_entries_kept(resnet20_onnx, store):
    measured = anchor_rows(store)
    assert set(measured) == {"uniform-0.75", "uniform-0.50", "depth-0.50", "depth-1.00"}
    entries = other_rows(store)
    spoil(store, "uniform-0.50", age_h=7, ratio=5.0)   # old and off: re-timed, and the move reported
    spoil(store, "depth-1.00", age_h=7)                # old: re-timed
    spoil(store, "uniform-0.75", age_h=1, ratio=5.0)   # off but young: trusted as stored
    spoiled = anchor_rows(store)

    started = time.time()
    table = profile(str(resnet20_onnx), str(store), ProfileConfig(**FAST))  # the default: older than 6 h
    now = anchor_rows(store)
    assert {d.item for d in table.drifts} == {"uniform-0.50", "depth-1.00"}
    half = next(d for d in table.drifts if d.item == "uniform-0.50")
    assert half.stored == pytest.approx(spoiled["uniform-0.50"][0]) and half.age_s >= 7 * HOURS
    # Re-timed (a new measurement, not the spoiled figure), stored, and used by the table. How close it
    # lands to the first timing is the host's business: on a loaded host the two differed 10-fold.
    assert half.now != pytest.approx(half.stored) and 0 < half.now < 3
    assert now["uniform-0.50"][0] == pytest.approx(half.now) and now["uniform-0.50"][1] >= started
    assert table.anchors["uniform-0.50"].ratio == pytest.approx(half.now)
    assert "re-timed" in table.drift_warning  # which anchor it names (the worst): test_warning_...
    assert now["uniform-0.75"] == spoiled["uniform-0.75"] and now["depth-0.50"] == spoiled["depth-0.50"]
    assert other_rows(store) == entries  # only anchors: the single entries keep their rows


def test_retimed_anchors_report_what_is_stored_when_the_offset_did_not_hold(resnet20_onnx, store, monkeypatch,
                                                                             watched_entries):
    # The session's control reads 0.2 before its entries and 1.0 after them: the host drifted, so the
    # re-timed anchor goes back to the store as timed, and its drift must report that figure, not the
    # corrected one it was first stored at (seen in CI, where the real control read ~1.05 and then ~1.0).
    spoil(store, "uniform-0.50", age_h=7, ratio=5.0)
    # (A reading the load guard re-times is asked again: before any entry it is 0.2, after them 1.0.)
    monkeypatch.setattr(lut, "time_control", lambda *args: Control(1.0 if watched_entries else 0.2, 0.001))
    table = profile(str(resnet20_onnx), str(store), ProfileConfig(**FAST))
    assert not table.control.applied and not table.control.steady
    half = next(d for d in table.drifts if d.item == "uniform-0.50")
    assert anchor_rows(store)["uniform-0.50"][0] == pytest.approx(half.now) and 0 < half.now < 3
    assert table.anchors["uniform-0.50"].ratio == pytest.approx(half.now)


def test_never_and_always(resnet20_onnx, store):
    spoil(store, "uniform-0.50", age_h=30 * 24)
    before = anchor_rows(store)
    table = profile(str(resnet20_onnx), str(store), ProfileConfig(**FAST, recheck_after_s=None))
    assert table.drifts == [] and table.drift_warning is None and anchor_rows(store) == before
    table = profile(str(resnet20_onnx), str(store), ProfileConfig(**FAST, recheck_after_s=0))
    assert {d.item for d in table.drifts} == set(before)
    assert all(anchor_rows(store)[item][1] > created for item, (_, created) in before.items())


def test_warning_only_past_timing_noise():
    still = [AnchorDrift("uniform-0.50", 0.50, 0.51, 8 * HOURS), AnchorDrift("depth-1.00", 0.30, 0.29, 8 * HOURS)]
    assert drift_warning(still) is None
    moved = still + [AnchorDrift("uniform-0.75", 0.80, 0.70, 50 * HOURS)]
    line = drift_warning(moved)
    assert "uniform-0.75 0.800 -> 0.700" in line and "2.1 days" in line and "\n" not in line


def test_cli_warns_on_stderr_and_refuses_a_negative_age(resnet20_onnx, store):
    runner = CliRunner()
    spoil(store, "uniform-0.50", age_h=7, ratio=5.0)
    result = runner.invoke(app, ["profile", str(resnet20_onnx), "--store", str(store), "--round-to", "8",
                                 "--points", "1", "--runs", "3", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert [d["anchor"] for d in json.loads(result.stdout)["rechecked"]] == ["uniform-0.50"]
    assert "drifted" in result.stderr and "uniform-0.50 5.000 ->" in result.stderr
    assert "drifted" not in result.stdout  # --json stays one document
    result = runner.invoke(app, ["profile", str(resnet20_onnx), "--store", str(store), "--recheck-after", "-1"])
    assert result.exit_code == 2 and "--recheck-after must be >= 0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
