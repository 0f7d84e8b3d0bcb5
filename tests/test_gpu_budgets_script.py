"""scripts/gpu_budgets.sh, run here on the torch backend's CPU provider: a met budget prints its measured line,
a refused one its reason, and neither fails the script (the GPU run's own figures are in bench/results/)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_met_and_refused_budgets_each_print_one_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PROVIDER": "cpu", "MODELS": "builtin:resnet20",
           "JOBS": "layer 0.9,filter 0.01", "RUNS": "3", "WORK": str(tmp_path)}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_budgets.sh")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    met = lines[lines.index(next(l for l in lines if l.endswith("resnet20 layer 0.9"))) + 1]
    assert met.startswith("measured ") and "met=True" in met and "removed" in met
    assert any(l.startswith("refused: error: budget 0.010 is below the smallest latency filter") for l in lines)
    assert (tmp_path / "resnet20-layer-0.9" / "model.onnx").is_file() and (tmp_path / "latency.sqlite").is_file()
