"""scripts/gpu_check.sh on a machine without a GPU: every check SKIPs with its reason (exit 0), and an
interpreter that cannot import torch FAILs the probe in one line (exit 1) instead of skipping silently."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def _run(tmp_path, python):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": python, "WORK": str(tmp_path / "w"), "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script runs its checks (pytest -m gpu)")
def test_without_a_gpu_every_check_skips(tmp_path):
    res = _run(tmp_path, sys.executable)
    lines = [ln for ln in res.stdout.splitlines() if ln.split()[1:2] in (["PASS"], ["SKIP"], ["FAIL"])]
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(lines) == 7 and all(ln.split()[1] == "SKIP" and "no CUDA GPU" in ln for ln in lines)


def test_an_interpreter_without_torch_fails_the_probe(tmp_path):
    res = _run(tmp_path, str(tmp_path / "no-such-python"))
    assert res.returncode == 1
    assert [ln.split()[:2] for ln in res.stdout.splitlines()[1:]] == [["probe", "FAIL"]]
