"""Latency tables: grid, storage and reuse, resume after kill -9, prediction identities, Ray fan-out."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from graphs.deps import analyze
from graphs.blocks import removable_blocks
from graphs.onnx_io import load_model
from toolchain.latency.lut import ProfileConfig, candidates, group_grid, profile
from toolchain.latency.predict import LayerMap, predict

FAST = dict(points=1, runs=3, warmup=1)


def rows(store):
    with sqlite3.connect(store) as db:
        return {r[:4]: r[-1] for r in db.execute("SELECT kind, item, k, protocol, created_at FROM measurements")}


def test_grid_is_aligned_and_below_full_width(resnet20_onnx):
    analysis = analyze(load_model(resnet20_onnx))
    for g in analysis.groups:
        grid = group_grid(g, 8, 4)
        assert all(k % 8 == 0 and 0 < k < g.channels for k in grid)
        assert len(grid) <= 4
    wide = next(g for g in analysis.groups if g.channels == 64)
    assert group_grid(wide, 8, 4) == [8, 24, 40, 56]


def test_table_covers_every_entry_and_is_reused(resnet20_onnx, tmp_path):
    store = tmp_path / "lut.sqlite"
    config = ProfileConfig(**FAST)
    table = profile(str(resnet20_onnx), str(store), config)
    analysis = analyze(load_model(resnet20_onnx))
    expected = candidates(analysis, config)
    assert len(rows(store)) == len(expected)
    assert set(table.blocks) == {b.id for b in removable_blocks(analysis.model, analysis.shapes)}
    assert table.base_ms > 0 and all(r > 0 for v in table.groups.values() for r in v.values())
    before = rows(store)
    again = profile(str(resnet20_onnx), str(store), config)
    assert rows(store) == before  # nothing re-measured
    assert again.groups == table.groups and again.blocks == table.blocks


def test_profile_resumes_after_kill_9(resnet20_onnx, tmp_path):
    store = tmp_path / "lut.sqlite"
    cmd = [sys.executable, "-m", "toolchain.cli", "profile", str(resnet20_onnx), "--store", str(store),
           "--points", "2", "--runs", "6", "--warmup", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if store.exists():
            try:
                if len(rows(store)) >= 5:
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = rows(store)
    analysis = analyze(load_model(resnet20_onnx))
    total = len(candidates(analysis, ProfileConfig(points=2, runs=6, warmup=1)))
    assert 5 <= len(partial) < total, "the kill should land mid-profile"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    final = rows(store)
    assert len(final) == total
    assert all(final[key] == created for key, created in partial.items())  # kept, not re-measured


def test_prediction_identities(resnet20_onnx, tmp_path):
    table = profile(str(resnet20_onnx), str(tmp_path / "lut.sqlite"), ProfileConfig(**FAST))
    analysis = analyze(load_model(resnet20_onnx))
    blocks = {b.id: b for b in removable_blocks(analysis.model, analysis.shapes)}
    layers = LayerMap.build(analysis)
    assert predict(table, analysis, {}, [], layers).corrected == pytest.approx(1.0)
    gid, samples = next(iter(table.groups.items()))
    k, ratio = next(iter(samples.items()))
    single = predict(table, analysis, {gid: k}, [], layers)
    # One change alone overlaps with nothing: both predictors give the (monotone-smoothed) entry.
    entry = table.group_ratio(gid, k)
    assert single.additive == pytest.approx(entry) and single.corrected == pytest.approx(entry)
    assert entry <= 1.0 + 1e-9  # smoothing never makes a narrower model slower than the full one
    bid = next(iter(blocks))
    assert predict(table, analysis, {}, [blocks[bid]], layers).corrected == pytest.approx(table.blocks[bid])
    # Interpolation between samples stays between the neighbours.
    g = analysis.group(gid)
    mid = table.group_ratio(gid, (k + g.channels) // 2)
    assert entry - 1e-9 <= mid <= 1.0 + 1e-9


def test_ray_local_fan_out(resnet20_onnx, tmp_path):
    pytest.importorskip("ray")
    import ray

    store = tmp_path / "lut.sqlite"
    config = ProfileConfig(groups=False, runs=2, warmup=0)
    try:
        table = profile(str(resnet20_onnx), str(store), config, ray_address="local", ray_resource="compress-local")
    finally:
        ray.shutdown()
    analysis = analyze(load_model(resnet20_onnx))
    assert set(table.blocks) == {b.id for b in removable_blocks(analysis.model, analysis.shapes)}
    assert len(rows(store)) == len(table.blocks)


def test_isolated_layer_tables_for_comparison(resnet20_onnx):
    from toolchain.latency.backends import get_backend
    from toolchain.latency.isolated import isolated_table, predict_isolated

    analysis = analyze(load_model(resnet20_onnx))
    saved = isolated_table(analysis, get_backend("ort", spinning=False), ProfileConfig(points=1, runs=3, warmup=1))
    plain_conv_groups = {"conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.2.conv1"}
    assert plain_conv_groups <= set(saved)
    widths = {g.id: g.channels for g in analysis.groups}
    assert predict_isolated(saved, widths, 1.0, {}) == 1.0
    gid = "layer3.2.conv1"
    k = next(iter(saved[gid]))
    assert predict_isolated(saved, widths, 2.0, {gid: k}) == pytest.approx(1.0 - saved[gid][k] / 2.0)
