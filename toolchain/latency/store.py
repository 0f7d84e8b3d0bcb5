"""SQLite store of latency measurements, shared safely by several processes.

A row is reusable exactly when its key matches: model hash, what was measured (group narrowed to k
channels, block removed, base model), backend, device, precision, batch, runtime version, protocol.
Each put commits at once (autocommit, WAL) so a kill -9 loses only the measurement in flight.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from graphs.errors import InputError

KINDS = ("group", "block", "anchor")
VALUES = ("ratio", "ref_median_ms", "median_ms", "p90_ms", "std_ms", "count")


@dataclass(frozen=True)
class Key:
    model_sha256: str
    kind: str            # 'group' | 'block' | 'base' | 'layer' | 'anchor'
    item: str            # group or block id; '' for base; 'uniform-0.50' for an anchor
    k: int               # kept channels; -1 for blocks, layers and base
    backend: str
    device: str
    precision: str
    batch: int
    runtime_version: str
    protocol: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown measurement kind {self.kind!r}: known are {', '.join(KINDS)}")
        if self.kind == "base" and self.item:
            raise InputError("a 'base' measurement has item ''")
        if self.kind != "group" and self.k != -1:
            raise InputError(f"k is -1 for {self.kind} measurements (got {self.k})")


_KEY_COLS = [f.name for f in fields(Key)]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS measurements (
  model_sha256 TEXT NOT NULL, kind TEXT NOT NULL, item TEXT NOT NULL, k INTEGER NOT NULL,
  backend TEXT NOT NULL, device TEXT NOT NULL, precision TEXT NOT NULL, batch INTEGER NOT NULL,
  runtime_version TEXT NOT NULL, protocol TEXT NOT NULL,
  ratio REAL, ref_median_ms REAL, median_ms REAL, p90_ms REAL, std_ms REAL, count INTEGER,
  created_at REAL NOT NULL,
  PRIMARY KEY ({', '.join(_KEY_COLS)})
);
CREATE TABLE IF NOT EXISTS meta (
  model_sha256 TEXT NOT NULL, backend TEXT NOT NULL, precision TEXT NOT NULL, batch INTEGER NOT NULL,
  device TEXT NOT NULL, runtime_version TEXT NOT NULL, device_info TEXT, created_at REAL NOT NULL,
  PRIMARY KEY (model_sha256, backend, precision, batch)
);
CREATE TABLE IF NOT EXISTS device_profile (
  backend TEXT NOT NULL, device TEXT NOT NULL, precision TEXT NOT NULL, batch INTEGER NOT NULL,
  runtime_version TEXT NOT NULL, model_sha256 TEXT NOT NULL, op_class TEXT NOT NULL,
  ms_per_unit REAL NOT NULL, units REAL NOT NULL, entries INTEGER NOT NULL, created_at REAL NOT NULL,
  PRIMARY KEY (backend, device, precision, batch, runtime_version, model_sha256, op_class)
);
"""
# PRAGMA user_version: 1 = measurements + meta, 2 = + device_profile (version-1 stores gain the table
# on open: CREATE IF NOT EXISTS, nothing rewritten). A store from a newer release is refused.
SCHEMA_VERSION = 2
PROFILE_COLS = ("backend", "device", "precision", "batch", "runtime_version")


def _create_file(path: Path) -> None:
    """Create the store file exclusively, never through a symlink, with the user's umask."""
    if path.is_symlink():
        raise InputError(f"store {path} is a symlink: refusing to write through it; give the real path")
    if path.exists():
        if not stat.S_ISREG(path.stat().st_mode):
            raise InputError(f"store {path} exists and is not a regular file")
        return
    if not path.parent.is_dir():
        raise InputError(f"store directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        os.close(fd)
    except FileExistsError:
        if path.is_symlink():  # lost a race against someone planting a link
            raise InputError(f"store {path} is a symlink: refusing to write through it") from None


class Store:
    def __init__(self, path: str | os.PathLike, timeout_s: float = 60.0):
        self.path = Path(path)
        _create_file(self.path)
        # autocommit: every statement is its own transaction, committed before put() returns
        self.db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        if self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise InputError(f"store {self.path}: cannot enable WAL mode (network filesystem?)")
        self.db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives process kills
        self._migrate()
        self._bound: set[tuple] = set()

    def _migrate(self) -> None:
        """Create or upgrade the schema in one transaction: it appears whole or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InputError(f"store {self.path} has schema version {version}; this release reads up to "
                                 f"{SCHEMA_VERSION}: upgrade compress or use another store")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            if version < SCHEMA_VERSION:
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def bind(self, model_sha256: str, backend: str, precision: str, batch: int, device: str,
             runtime_version: str, device_info: dict | None = None, fresh: bool = False) -> None:
        """Record (or check) which device/runtime this model+backend+precision+batch is measured on.

        Rows from another device or runtime version are never mixed in silently; `fresh` drops them.
        """
        ident = (model_sha256, backend, precision, batch)
        where = "model_sha256=? AND backend=? AND precision=? AND batch=?"
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if fresh:
                self.db.execute(f"DELETE FROM measurements WHERE {where}", ident)
                self.db.execute(f"DELETE FROM meta WHERE {where}", ident)
            row = self.db.execute(f"SELECT device, runtime_version FROM meta WHERE {where}", ident).fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES (?,?,?,?,?,?,?,?)",
                                (*ident, device, runtime_version, json.dumps(device_info or {}), time.time()))
            elif tuple(row) != (device, runtime_version):
                raise InputError(f"store {self.path} holds measurements of {model_sha256[:12]} from "
                                 f"{row[0]} / {row[1]}; this is {device} / {runtime_version}: "
                                 "use another store or --fresh")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._bound.add((*ident, device, runtime_version))

    def _check(self, key: Key) -> None:
        ident = (key.model_sha256, key.backend, key.precision, key.batch, key.device, key.runtime_version)
        if ident not in self._bound:
            self.bind(*ident[:4], device=key.device, runtime_version=key.runtime_version)

    def get(self, key: Key) -> dict | None:
        where = " AND ".join(f"{c}=?" for c in _KEY_COLS)
        cur = self.db.execute(f"SELECT * FROM measurements WHERE {where}", astuple(key))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def put(self, key: Key, values: dict) -> None:
        unknown = set(values) - set(VALUES)
        if unknown:
            raise ValueError(f"unknown measurement values {sorted(unknown)}")
        self._check(key)
        vals = [values.get(v) for v in VALUES]
        self.db.execute(f"INSERT OR REPLACE INTO measurements VALUES ({','.join('?' * 17)})",
                        (*astuple(key), *vals, time.time()))

    def items(self, model_sha256: str, backend: str, **where) -> list[dict]:
        """Rows of one model on one backend, narrowed by any other key columns (kind=, precision=...)."""
        bad = set(where) - set(_KEY_COLS)
        if bad:
            raise ValueError(f"unknown key columns {sorted(bad)}")
        conds = {"model_sha256": model_sha256, "backend": backend, **where}
        sql = "SELECT * FROM measurements WHERE " + " AND ".join(f"{c}=?" for c in conds)
        cur = self.db.execute(sql + " ORDER BY kind, item, k", tuple(conds.values()))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def put_profile(self, where: dict, model_sha256: str, rows: dict[str, tuple[float, float, int]]) -> None:
        """Replace one model's contribution to a device profile: op class -> (ms per unit, units, entries).

        `where` names the device: backend, device, precision, batch, runtime_version."""
        ident = tuple(where[c] for c in PROFILE_COLS)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(f"DELETE FROM device_profile WHERE {' AND '.join(f'{c}=?' for c in PROFILE_COLS)} "
                            "AND model_sha256=?", (*ident, model_sha256))
            for op_class, (ms, units, entries) in rows.items():
                self.db.execute("INSERT INTO device_profile VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                (*ident, model_sha256, op_class, ms, units, entries, time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def profile_rows(self, where: dict, exclude_model: str | None = None) -> list[dict]:
        """Every model's per-class rows of one device profile, but `exclude_model`'s."""
        sql = "SELECT * FROM device_profile WHERE " + " AND ".join(f"{c}=?" for c in PROFILE_COLS)
        params = [where[c] for c in PROFILE_COLS]
        if exclude_model:
            sql += " AND model_sha256 != ?"
            params.append(exclude_model)
        cur = self.db.execute(sql + " ORDER BY model_sha256, op_class", params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
