"""scripts/check_architecture.py: the codebase meets issue 14's goals, and the check sees each kind of
violation when one is planted (so a clean result means something)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_architecture.py"


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True)


def test_the_codebase_meets_the_goals():
    proc = _check(ROOT)
    assert proc.returncode == 0, proc.stdout
    assert "architecture goals met" in proc.stdout


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_each_kind_of_violation_is_reported(tmp_path):
    long_function = "def long():\n" + "    x = 1\n" * 60 + "    return x\n"
    root = _tree(tmp_path, {
        "graphs/big.py": "x = 1\n" * 401,
        "toolchain/long.py": long_function,
        "toolchain/private.py": "from graphs.big import _hidden\nimport toolchain.sync as sync\nsync._fix(1)\n",
        "calib/writer.py": "import os\nos.replace('a.tmp', 'a')\n",
        "bench/writer.py": "from pathlib import Path\nPath('a.tmp').rename('a')\n'x'.replace('a', 'b')\n",
        "graphs/atomic.py": "import os\nos.replace('a.tmp', 'a')\n",  # the one writer may
    })
    proc = _check(root)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "graphs/big.py:1: file-lines: 401 lines (max 400)" in lines
    assert "toolchain/long.py:1: function-lines: long is 62 lines (max 60)" in lines
    assert "toolchain/private.py:1: private-import: from graphs.big import _hidden" in lines
    assert "toolchain/private.py:3: private-import: sync._fix" in lines
    assert "calib/writer.py:2: atomic-write: os.replace() outside graphs/atomic.py" in lines
    assert "bench/writer.py:2: atomic-write: .rename() outside graphs/atomic.py" in lines
    assert not any(line.startswith("graphs/atomic.py") for line in lines)
    assert not any(line.startswith("bench/writer.py:3") for line in lines)  # str.replace is no write
    assert lines[-1] == "6 violation(s)"


def test_limits_are_inclusive(tmp_path):
    root = _tree(tmp_path, {"graphs/ok.py": "def f():\n" + "    x = 1\n" * 58 + "    return x\n"
                                            + "y = 1\n" * (400 - 60)})
    proc = _check(root)
    assert proc.returncode == 0, proc.stdout
