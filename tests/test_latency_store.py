"""The SQLite measurement store: round trip, WAL, concurrent writers, device mismatch, symlinks."""
import multiprocessing as mp
import os
import sqlite3

import pytest

from graphs.errors import InputError
from toolchain.latency.store import Key, Store

SHA = "ab" * 32


def key(item="layer1.0.conv1", k=8, device="cpu-x", runtime="1.31.1", kind="group"):
    return Key(SHA, kind, item, k, "ort", device, "fp32", 1, runtime, "default")


def test_round_trip_and_replace(tmp_path):
    with Store(tmp_path / "lat.sqlite") as s:
        assert s.get(key()) is None
        s.put(key(), {"ratio": 0.8, "ref_median_ms": 20.0, "median_ms": 16.0, "p90_ms": 17.0,
                      "std_ms": 0.5, "count": 60})
        s.put(key(kind="block", item="layer3.4", k=-1), {"ratio": 0.9, "median_ms": 18.0})
        row = s.get(key())
        assert row["ratio"] == 0.8 and row["count"] == 60 and row["created_at"] > 0
        s.put(key(), {"ratio": 0.7})  # INSERT OR REPLACE: same key, new values
        assert s.get(key())["ratio"] == 0.7
        assert [r["kind"] for r in s.items(SHA, "ort")] == ["block", "group"]
        assert len(s.items(SHA, "ort", kind="group")) == 1
        assert s.items(SHA, "tensorrt") == []
    with Store(tmp_path / "lat.sqlite") as s:  # persisted across opens
        assert s.get(key())["ratio"] == 0.7
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_keys_rejected():
    with pytest.raises(InputError, match="kind"):
        key(kind="filter")
    with pytest.raises(InputError, match="k is -1"):
        key(kind="block", item="layer3.4", k=5)


def _writer(path, worker, n):
    with Store(path) as s:
        for i in range(n):
            s.put(key(item=f"w{worker}", k=i), {"ratio": i / n, "count": worker})


def test_two_processes_write_concurrently(tmp_path):
    path = tmp_path / "lat.sqlite"
    ctx = mp.get_context("spawn")  # a fresh interpreter each, like two CLI processes
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store(path) as s:
        rows = s.items(SHA, "ort")
        assert len(rows) == 300
        assert {r["item"] for r in rows} == {"w0", "w1"}


def test_other_device_or_runtime_refused(tmp_path):
    path = tmp_path / "lat.sqlite"
    with Store(path) as s:
        s.put(key(), {"ratio": 0.9})
    with Store(path) as s:
        with pytest.raises(InputError, match="holds measurements of .* from cpu-x / 1.31.1; this is gpu-y"):
            s.put(key(device="gpu-y"), {"ratio": 0.5})
        with pytest.raises(InputError, match="use another store or --fresh"):
            s.bind(SHA, "ort", "fp32", 1, device="cpu-x", runtime_version="1.32.0")
        assert s.get(key(device="gpu-y")) is None
        s.bind(SHA, "ort", "fp32", 2, device="gpu-y", runtime_version="1.31.1")  # other batch: its own meta
        s.bind(SHA, "ort", "fp32", 1, device="gpu-y", runtime_version="1.31.1", fresh=True)
        assert s.items(SHA, "ort") == []
        s.put(key(device="gpu-y"), {"ratio": 0.5})


def test_symlink_refused(tmp_path):
    real = tmp_path / "real.sqlite"
    sqlite3.connect(real).close()
    link = tmp_path / "link.sqlite"
    os.symlink(real, link)
    with pytest.raises(InputError, match="symlink"):
        Store(link)
    dangling = tmp_path / "dangling.sqlite"
    os.symlink(tmp_path / "nowhere.sqlite", dangling)
    with pytest.raises(InputError, match="symlink"):
        Store(dangling)
    assert not (tmp_path / "nowhere.sqlite").exists()


def test_created_with_user_permissions(tmp_path):
    old = os.umask(0o077)
    try:
        Store(tmp_path / "lat.sqlite").close()
    finally:
        os.umask(old)
    assert (tmp_path / "lat.sqlite").stat().st_mode & 0o777 == 0o600
