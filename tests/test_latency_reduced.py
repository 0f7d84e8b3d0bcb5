"""Reduced latency tables (issue 15): active selection, the device profile as a prior, resume, the
store's schema version. Real models, real onnxruntime measurements."""
import math
import sqlite3

import numpy as np
import pytest

from graphs.deps import analyze
from graphs.errors import InputError
from graphs.onnx_io import load_model
from toolchain.latency.anchors import anchor_widths
from graphs.onnx_io import model_sha256
from toolchain.latency.config import ProfileConfig, resolve_round_to
from toolchain.latency.estimate import fill_estimates
from toolchain.latency.grid import candidates
from toolchain.latency.lut import entry_key, measure_reduced, profile, read_table
from toolchain.latency.predict import LayerMap, Predictor
from toolchain.latency.store import SCHEMA_VERSION, Store

QUICK = dict(runs=10, warmup=1, round_to=8)


@pytest.fixture(scope="module")
def resnet18_small(tmp_path_factory):
    """torchvision resnet18 at 64x64: real ImageNet topology, ~2 ms a call, savings that follow MACs."""
    from toolchain.export import export_spec

    path = tmp_path_factory.mktemp("models") / "resnet18_64.onnx"
    export_spec("torchvision:resnet18", str(path), input_shape=(1, 3, 64, 64))
    return path


@pytest.fixture(scope="module")
def resnet56(tmp_path_factory):
    from toolchain.export import export_spec

    path = tmp_path_factory.mktemp("models") / "resnet56.onnx"
    export_spec("builtin:resnet56", str(path))
    return path


def measured_rows(store) -> dict:
    with sqlite3.connect(store) as db:
        return {r[:3]: r[3] for r in db.execute("SELECT kind, item, k, created_at FROM measurements")}


def _truth_store(analysis, efficiency):
    """A per-layer cost model with known efficiencies stands in for the device: what selection can
    recover from a quarter of the grid is then exact to judge (test_latency_lut does the same for the fit)."""
    layers = LayerMap.build(analysis)
    blocks = {b.id: b for b in analysis.blocks}

    def truth(kept, removed):
        fractions = {g: k / analysis.group(g).channels for g, k in kept.items()}
        return 1.0 - float(layers.savings(fractions, {n for b in removed for n in b.nodes}) @ efficiency)

    def entry(c):
        return truth({g: len(s["keep"]) for g, s in c.plan.channels.items()}, [blocks[b] for b in c.plan.remove])
    return truth, entry


def _select(analysis, sha, store, config, entry, pick=None):
    device = {"device": "synthetic", "runtime": "truth", "runtime_version": "1"}
    todo = candidates(analysis, config)
    stored = lambda c: store.get(entry_key(sha, c, device, config)) is not None  # noqa: E731

    def measure(entries):
        for c in entries:
            store.put(entry_key(sha, c, device, config), {"ratio": entry(c), "ref_median_ms": 1.0})
    if pick is None:
        measure_reduced(store, sha, analysis, device, config, todo, stored, measure, None)
    else:
        measure([c for c in todo if c.kind == "anchor"] + pick([c for c in todo if c.kind != "anchor"]))
    table, predictor = read_table(store, sha, analysis, device, config)
    return fill_estimates(table, analysis, config, predictor), predictor, len(todo)


def test_active_selection_recovers_plans_from_a_quarter_of_the_grid(resnet18_small, tmp_path):
    """resnet18's graph, entries from a known per-layer model: the chosen quarter of the grid predicts
    random mixed plans within the issue's goals (median 3%, worst 8%), estimates every entry it skipped,
    and beats the same number of entries drawn at random (made to fail: choose() returning the first
    unmeasured entry -> worst 9.6%, and random draws 11.3%)."""
    model = load_model(resnet18_small)
    analysis = analyze(model)
    truth, entry = _truth_store(analysis, np.random.default_rng(0).uniform(0.6, 1.4, len(LayerMap.build(analysis).share)))
    config = resolve_round_to(ProfileConfig(table="reduced", round_to=16))
    with Store(tmp_path / "a.sqlite") as a, Store(tmp_path / "b.sqlite") as b:
        for store in (a, b):
            store.bind(model_sha256(model), "ort", "fp32", 1, "synthetic", "truth 1")
        table, active, grid = _select(analysis, model_sha256(model), a, config, entry)
        rng = np.random.default_rng(1)
        _, drawn, _ = _select(analysis, model_sha256(model), b, config, entry,
                              pick=lambda rest: list(rng.permutation(rest))[: table.measured - 4])
    assert table.measured <= math.ceil(grid / 4) < grid
    for g, ks in table.estimated_groups.items():
        for k, r in ks.items():
            assert r == pytest.approx(truth({g: k}, []), abs=0.03)
    rng = np.random.default_rng(5)
    errors = {"active": [], "drawn": []}
    blocks = analysis.blocks
    for _ in range(40):
        kept = {g.id: int(rng.choice(range(16, g.channels, 16))) for g in analysis.groups
                if g.prunable and g.channels > 16 and rng.random() < 0.6}
        removed = [blocks[i] for i in rng.choice(len(blocks), 1, replace=False)] if rng.random() < 0.7 else []
        real = truth(kept, removed)
        for name, fit in (("active", active), ("drawn", drawn)):
            errors[name].append(abs(fit.predict(kept, removed).corrected - real) / real)
    assert np.median(errors["active"]) <= 0.03 and max(errors["active"]) <= 0.08
    assert max(errors["active"]) < max(errors["drawn"])


def test_reduced_table_on_real_measurements(resnet18_small, tmp_path):
    """Real onnxruntime timings: a quarter of the grid measured, every other entry estimated (monotone
    per group, as the solvers need) (made to fail: the estimates left out -> the entry count check).
    Prediction accuracy is judged above against a known model and in bench/lut_accuracy.py against
    measured plans: on this shared 2-core host a few plans timed in a test vary by tens of percent."""
    model = load_model(resnet18_small)
    analysis = analyze(model)
    config = ProfileConfig(runs=10, warmup=1, table="reduced")
    table = profile(str(resnet18_small), str(tmp_path / "lut.sqlite"), config)
    grid = candidates(analysis, resolve_round_to(config))
    assert len(measured_rows(tmp_path / "lut.sqlite")) == table.measured <= math.ceil(len(grid) / 4)
    estimated = sum(len(v) for v in table.estimated_groups.values()) + len(table.estimated_blocks)
    assert estimated + table.measured == len(grid)
    for g in table.estimated_groups:
        ks = sorted({**table.estimated_groups[g], **table.groups.get(g, {})})
        assert all(table.group_ratio(g, a) <= table.group_ratio(g, b) + 1e-9 for a, b in zip(ks, ks[1:]))
    # The solvers run on it as on a full table.
    fit = Predictor(table, analysis)
    assert 0 < fit.predict(anchor_widths(analysis, 0.5, 16), []).corrected < 1


def test_device_profile_is_written_read_back_and_lowers_the_count(resnet20_onnx, resnet56, tmp_path):
    """A model profiled on this device leaves per-op-class efficiencies in the store; a second model
    reads them as its prior, and with it needs no more measurements than without (made to fail:
    device_prior returning {} -> no prior)."""
    shared = tmp_path / "shared.sqlite"
    profile(str(resnet20_onnx), str(shared), ProfileConfig(**QUICK))
    with Store(shared) as store:
        where = {"backend": "ort", "precision": "fp32", "batch": 1}
        rows = store.db.execute("SELECT device, runtime_version, op_class, ms_per_unit, entries FROM device_profile"
                                ).fetchall()
    classes = {r[2] for r in rows}
    assert {"all", "per-op", "conv-kxk", "conv-kxk/32"} <= classes
    assert all(r[3] >= 0 and r[4] > 0 for r in rows)
    assert next(r[3] for r in rows if r[2] == "all") > 0
    where.update(device=rows[0][0], runtime_version=rows[0][1])
    with Store(shared) as store:
        assert store.profile_rows(where) and not store.profile_rows(where, exclude_model=_sha(resnet20_onnx))
    # 0.03: since the anchors can earn the per-op term (predict._fit), resnet56 alone met 0.06 after its 4-7
    # anchors and entries, leaving the prior nothing to save; at 0.03 it took 25 (the cap), helped 6. On a host
    # noisy enough that the fit's misfit keeps the bound over 0.03, both stop at the cap (CI, 2026-12-04: 25 and
    # 25): how many measurements the prior saves is the benchmark's figure (bench/lut_accuracy.py
    # --prior-models), so here it must be used and must not cost any.
    config = ProfileConfig(**QUICK, table="reduced", target_error=0.03)
    alone = profile(str(resnet56), str(tmp_path / "alone.sqlite"), config)
    helped = profile(str(resnet56), str(shared), config)
    assert helped.prior and not alone.prior
    assert helped.measured <= alone.measured


def _sha(path):
    return model_sha256(load_model(path))


class Interrupt(Exception):
    pass


class StopAfter:
    """A progress hook that stops the run after n measurements, as Ctrl-C would."""

    def __init__(self, n):
        self.n = n

    def start(self, total, done):
        self.total = total

    def advance(self, candidate):
        self.n -= 1
        if self.n == 0:
            raise Interrupt


def test_reduced_table_resumes_after_interruption(resnet20_onnx, tmp_path):
    """Stopped after 5 measurements, a re-run keeps them (same rows, same timestamps) and continues
    to the cap (made to fail: the store's rows ignored on resume -> the timestamps change)."""
    store = tmp_path / "lut.sqlite"
    config = ProfileConfig(**QUICK, table="reduced", max_measurements=9, target_error=0.001)
    with pytest.raises(Interrupt):
        profile(str(resnet20_onnx), str(store), config, progress=StopAfter(5))
    first = measured_rows(store)
    assert len(first) == 5
    table = profile(str(resnet20_onnx), str(store), config)
    after = measured_rows(store)
    assert {k: after[k] for k in first} == first
    assert len(after) == table.measured == 9


def test_store_schema_is_versioned_and_migrated(tmp_path):
    """A store written before the device profile gains its table on open; a newer schema is refused."""
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE measurements (model_sha256 TEXT, kind TEXT, item TEXT, k INTEGER, backend TEXT, "
                   "device TEXT, precision TEXT, batch INTEGER, runtime_version TEXT, protocol TEXT, ratio REAL, "
                   "ref_median_ms REAL, median_ms REAL, p90_ms REAL, std_ms REAL, count INTEGER, created_at REAL, "
                   "PRIMARY KEY (model_sha256, kind, item, k, backend, device, precision, batch, runtime_version, "
                   "protocol))")
        db.execute("INSERT INTO measurements VALUES ('a','block','x',-1,'ort','cpu','fp32',1,'ort 1','p',0.9,1,1,1,0,3,0)")
    where = {"backend": "ort", "device": "cpu", "precision": "fp32", "batch": 1, "runtime_version": "ort 1"}
    with Store(old) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert len(store.items("a", "ort")) == 1  # the old rows are kept
        store.put_profile(where, "a", {"all": (2.0, 10.0, 3)})
        assert store.profile_rows(where)[0]["ms_per_unit"] == 2.0
    with sqlite3.connect(old) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(InputError, match="schema version 99"):
        Store(old)


def test_bad_table_mode_is_refused(resnet20_onnx, tmp_path):
    with pytest.raises(InputError, match="unknown table mode"):
        profile(str(resnet20_onnx), str(tmp_path / "s.sqlite"), ProfileConfig(**QUICK, table="half"))
    assert not (tmp_path / "s.sqlite").exists()


def test_cli_profile_reduced_table(resnet20_onnx, tmp_path):
    """`compress profile --table reduced --max-measurements 6`: six entries measured, the rest estimated
    and listed as such; a bad --table is refused with exit 2 and no store (made to fail: the option
    not passed into ProfileConfig -> 39 entries measured)."""
    import json

    from typer.testing import CliRunner

    from toolchain.cli import app

    store = tmp_path / "lut.sqlite"
    result = CliRunner().invoke(app, ["profile", str(resnet20_onnx), "--store", str(store), "--table", "reduced",
                                      "--max-measurements", "6", "--runs", "3", "--round-to", "8", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["measured_entries"] == 6 == len(measured_rows(store))
    assert summary["table"] == "reduced" and summary["estimated_groups"] and summary["estimated_blocks"]
    bad = CliRunner().invoke(app, ["profile", str(resnet20_onnx), "--store", str(tmp_path / "b.sqlite"),
                                   "--table", "some"])
    assert bad.exit_code == 2 and "unknown table mode" in bad.output
    assert not (tmp_path / "b.sqlite").exists()
