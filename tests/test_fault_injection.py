"""Fault injection: kill -9 real `python -m toolchain.cli` subprocesses at random (seeded) points, re-run.

- `profile`: rows stored before the kill survive untouched (same created_at: not re-measured); the
  re-run completes the same set of table rows as an uninterrupted run.
- `prune --ratio`: DIR is never half-written: absent, or complete (four files, plan.json's hash is the
  source model's, `compress verify DIR` passes); the re-run gives the uninterrupted run's plan and weights.
- `finetune`: after a kill, a re-run resumes from DIR/finetune/checkpoint.pt and finishes; DIR consistent.
- `build --backend ort --precision fp32`: OUT absent or complete; the re-run matches an uninterrupted run.

Each test is slow on purpose (real processes importing torch): `pytest -m slow tests/test_fault_injection.py`.
`FAULTS` counts faults injected (a kill that landed while the command was running) and survived.
COMPRESS_FAULT_ROUNDS sets the kills per command (default 3), COMPRESS_FAULT_SEED the seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("COMPRESS_FAULT_ROUNDS", "3"))
SEED = int(os.environ.get("COMPRESS_FAULT_SEED", "7"))
FAULTS: Counter = Counter()

pytestmark = pytest.mark.slow


def cli(*args, cwd, check=True, timeout=900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "toolchain.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"compress {' '.join(map(str, args))}: rc {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc


def kill_after(args, cwd, delay: float) -> bool:
    """Start `compress ARGS`, SIGKILL it after `delay` s. True if the kill landed while it ran."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timed(args, cwd) -> float:
    t0 = time.monotonic()
    cli(*args, cwd=cwd)
    return time.monotonic() - t0


def delays(rng: random.Random, duration: float, n: int) -> list[float]:
    """Kill points spread over the command's run, early (imports) to late (writing)."""
    return sorted(rng.uniform(0.15, 1.0) * duration for _ in range(n))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    cli("export", "builtin:resnet20", "-o", d / "r20.onnx", cwd=d)
    return d


# ----------------------------------------------------------------------------- profile

PROFILE = ["profile", "r20.onnx", "--runs", "3", "--warmup", "0", "--points", "2", "--round-to", "4", "--json"]


def rows(store: Path) -> dict[tuple, float]:
    if not store.exists():
        return {}
    db = sqlite3.connect(store)
    try:
        return {tuple(r[:-1]): r[-1] for r in db.execute(
            "SELECT model_sha256, kind, item, k, backend, precision, batch, protocol, created_at FROM measurements")}
    except sqlite3.OperationalError:  # killed before the schema was created
        return {}
    finally:
        db.close()


def test_profile_kill_resume(work):
    rng = random.Random(SEED)
    reference = work / "ref.sqlite"
    duration = timed([*PROFILE, "--store", reference], work)
    expected = set(rows(reference))
    assert expected
    store = work / "killed.sqlite"
    for delay in delays(rng, duration, ROUNDS):
        before = rows(store)
        landed = kill_after([*PROFILE, "--store", store], work, delay)
        FAULTS["profile injected"] += landed
        after = rows(store)
        for key, created in before.items():  # nothing measured is lost or measured again
            assert after.get(key) == created, f"row {key} lost or re-measured by an interrupted run"
        kept = rows(store)
        cli(*PROFILE, "--store", store, cwd=work)
        final = rows(store)
        for key, created in kept.items():
            assert final[key] == created, f"row {key} re-measured after the kill"
        assert set(final) == expected, "resumed table differs from the uninterrupted one"
        FAULTS["profile survived"] += landed
        store.unlink()  # next round starts from scratch with a different kill point
        for extra in store.parent.glob(store.name + "-*"):
            extra.unlink()


# ----------------------------------------------------------------------------- prune

def check_dir(d: Path, source: Path, cwd: Path) -> None:
    """DIR absent, or complete and consistent."""
    if not d.exists():
        return
    names = {p.name for p in d.iterdir()}
    assert {"model.onnx", "plan.json", "weights.safetensors", "summary.json"} <= names, f"half-written {d}: {names}"
    import onnx

    from graphs.onnx_io import model_sha256
    plan = json.loads((d / "plan.json").read_text())
    assert plan["model"]["onnx_sha256"] == model_sha256(onnx.load(str(source)))
    json.loads((d / "summary.json").read_text())
    verify = cli("verify", d, cwd=cwd, check=False)
    assert verify.returncode == 0, f"verify {d} after a kill: {verify.stdout} {verify.stderr[-500:]}"


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_prune_kill_never_half_written(work):
    rng = random.Random(SEED + 1)
    ref = work / "prune_ref"
    duration = timed(["prune", "r20.onnx", "--ratio", "0.5", "-o", ref], work)
    for i, delay in enumerate(delays(rng, duration, ROUNDS)):
        out = work / f"prune_{i}"
        landed = kill_after(["prune", "r20.onnx", "--ratio", "0.5", "-o", out], work, delay)
        FAULTS["prune injected"] += landed
        check_dir(out, work / "r20.onnx", work)
        cli("prune", "r20.onnx", "--ratio", "0.5", "-o", out, cwd=work)
        check_dir(out, work / "r20.onnx", work)
        assert sha(out / "plan.json") == sha(ref / "plan.json")
        assert sha(out / "weights.safetensors") == sha(ref / "weights.safetensors")
        assert sha(out / "model.onnx") == sha(ref / "model.onnx")
        FAULTS["prune survived"] += landed
    # a kill leaves at most a hidden temporary sibling; report (not fail) how many stay behind
    FAULTS["prune temp dirs left"] += len(leftovers(work, "prune_0"))


# ----------------------------------------------------------------------------- finetune

FINETUNE = ["--data", "digits", "--epochs", "2", "--batch-size", "128"]


def test_finetune_kill_resume(work):
    rng = random.Random(SEED + 2)
    base = work / "ft_base"
    cli("prune", "r20.onnx", "--ratio", "0.5", "-o", base, cwd=work)
    import shutil

    ref = work / "ft_ref"
    shutil.copytree(base, ref)
    duration = timed(["finetune", ref, *FINETUNE], work)
    for i, delay in enumerate(delays(rng, duration, ROUNDS)):
        d = work / f"ft_{i}"
        shutil.copytree(base, d)
        landed = kill_after(["finetune", d, *FINETUNE], work, delay)
        FAULTS["finetune injected"] += landed
        checkpoint = d / "finetune" / "checkpoint.pt"
        if checkpoint.exists():
            import torch
            torch.load(checkpoint, weights_only=True)  # never truncated
        cli("finetune", d, *FINETUNE, cwd=work)
        check_dir(d, work / "r20.onnx", work)
        assert json.loads((d / "train.json").read_text())["history"], "no history after the resumed run"
        assert len(json.loads((d / "train.json").read_text())["history"]) == 2
        FAULTS["finetune survived"] += landed


# ----------------------------------------------------------------------------- build

def has_build() -> bool:
    return "build" in cli("--help", cwd=ROOT).stdout


def build_outputs(out: Path) -> dict[str, str]:
    """OUT and the files written beside it (its manifest), by suffix after OUT's name."""
    return {p.name[len(out.name):]: p for p in out.parent.iterdir() if p.name.startswith(out.name)}


def check_build(out: Path, suffixes) -> None:
    """OUT absent, or the artifact loads and every manifest beside it is complete JSON."""
    files = build_outputs(out)
    if not files:
        return
    assert set(files) == set(suffixes), f"half-written build {out}: {sorted(files)} vs {sorted(suffixes)}"
    for suffix, p in files.items():
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".onnx":
            import onnx
            onnx.checker.check_model(onnx.load(str(p)))


def test_build_kill(work):
    if not has_build():
        pytest.skip("no build command")
    rng = random.Random(SEED + 3)
    d = work / "build_src"
    cli("prune", "r20.onnx", "--ratio", "0.5", "-o", d, cwd=work)
    ref = work / "build_ref.onnx"
    duration = timed(["build", d, "--backend", "ort", "--precision", "fp32", "-o", ref], work)
    suffixes = set(build_outputs(ref))
    for i, delay in enumerate(delays(rng, duration, ROUNDS)):
        out = work / f"build_{i}.onnx"
        landed = kill_after(["build", d, "--backend", "ort", "--precision", "fp32", "-o", out], work, delay)
        FAULTS["build injected"] += landed
        check_build(out, suffixes)
        cli("build", d, "--backend", "ort", "--precision", "fp32", "-o", out, cwd=work)
        check_build(out, suffixes)
        assert sha(out) == sha(ref), "re-run artifact differs from the uninterrupted run's"
        FAULTS["build survived"] += landed


def test_report_counts():
    """Last in the file: prints the tallies (bench/hardening_counts.py reads them from here)."""
    print("FAULTS", json.dumps(dict(FAULTS)))
    injected = sum(v for k, v in FAULTS.items() if k.endswith("injected"))
    survived = sum(v for k, v in FAULTS.items() if k.endswith("survived"))
    assert survived == injected
