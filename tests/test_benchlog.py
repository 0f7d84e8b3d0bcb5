"""bench/benchlog.py: a bench script's log carries date, commit and command line, and is written
whole or not at all (a failed run never replaces a good log)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys
sys.path.insert(0, {bench!r})
from benchlog import logged
with logged("x", {log!r}):
    print("figure 0.42")
    if "--fail" in sys.argv:
        raise RuntimeError("boom")
"""


def _run(tmp_path, log, *argv):
    script = tmp_path / "fake_bench.py"
    script.write_text(SCRIPT.format(bench=str(ROOT / "bench"), log=str(log)))
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, cwd=ROOT)


def test_log_has_header_and_output(tmp_path):
    log = tmp_path / "x.txt"
    proc = _run(tmp_path, log, "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    head = text.splitlines()[:4]
    assert head[0].startswith("# date: 20") and head[0].endswith(" UTC")
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    assert head[1].startswith(f"# commit: {commit}")
    assert head[3].endswith("fake_bench.py --seed 1")
    assert "figure 0.42" in text and "figure 0.42" in proc.stdout  # teed, not swallowed


def test_failed_run_leaves_the_previous_log(tmp_path):
    log = tmp_path / "x.txt"
    log.write_text("good log\n")
    proc = _run(tmp_path, log, "--fail")
    assert proc.returncode != 0 and "boom" in proc.stderr
    assert log.read_text() == "good log\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake_bench.py", "x.txt"]  # no temp file left


def test_checkout_moving_during_the_run_is_recorded(tmp_path):
    import os

    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    (repo / "bench" / "benchlog.py").write_text((ROOT / "bench" / "benchlog.py").read_text())
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, env=env, capture_output=True, text=True, check=True)  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    script = repo / "bench" / "fake.py"
    script.write_text(
        "import subprocess, sys\nfrom benchlog import logged\nwith logged('x', sys.argv[1]):\n"
        "    print('figure')\n"
        "    subprocess.run(['git', 'commit', '-q', '--allow-empty', '-m', 'two'], check=True)\n")
    log = tmp_path / "x.txt"
    proc = subprocess.run([sys.executable, str(script), str(log)], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert lines[1].startswith("# commit: ") and lines[2].startswith("# commit at the end: ")
    assert lines[1].split()[2] != lines[2].split()[5]


def test_log_records_the_load_average_at_start_and_end(tmp_path):
    log = tmp_path / "x.txt"
    assert _run(tmp_path, log).returncode == 0
    line = log.read_text().splitlines()[4]
    start, end = line.split(": ", 1)[1].split(" at the start, ")
    assert line.startswith("# load average (1, 5, 15 min): ") and end.endswith(" at the end")
    assert len([float(x) for x in start.split()]) == 3 and len([float(x) for x in end[:-len(" at the end")].split()]) == 3
