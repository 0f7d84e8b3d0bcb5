"""The one writer (graphs/atomic.py): modes follow the umask, a failure leaves no partial output."""
from __future__ import annotations

import json
import os

import pytest

from graphs.atomic import atomic_dir, atomic_file, write_json, write_text
from graphs.errors import InputError


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_file_mode_follows_umask(tmp_path, umask_027):
    write_json({"a": 1}, tmp_path / "x.json")
    with atomic_file(tmp_path / "y.bin") as tmp:  # a library writing to the path it is given
        tmp.write_bytes(b"\0" * 10)
    assert _mode(tmp_path / "x.json") == 0o640  # mkstemp alone would give 0600
    assert _mode(tmp_path / "y.bin") == 0o640
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_dir_mode_follows_umask(tmp_path, umask_027):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        write_text(tmp / "a.txt", "a")
        write_text(tmp / "sub" / "b.txt", "b")
    assert _mode(tmp_path / "out") == 0o750  # mkdtemp alone would give 0700
    assert _mode(tmp_path / "out" / "sub") == 0o750
    assert _mode(tmp_path / "out" / "a.txt") == 0o640
    assert _mode(tmp_path / "out" / "sub" / "b.txt") == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_file_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.json"
    write_json({"old": True}, target)
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text('{"new": tr')  # half written, then the writer dies
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_failed_dir_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            write_text(tmp / "model.onnx", "half")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_dir_rewrite_is_one_swap(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        write_text(tmp / "model.onnx", "m1")
        write_text(tmp / "weights", "w1")
        write_text(tmp / "plan.json", "p")
    with pytest.raises(RuntimeError):  # a stage that dies between its two files changes nothing
        with atomic_dir(out, start_from=out) as tmp:
            write_text(tmp / "model.onnx", "m2")
            raise RuntimeError("killed between the two files")
    assert (out / "model.onnx").read_text() == "m1" and (out / "weights").read_text() == "w1"
    with atomic_dir(out, start_from=out) as tmp:
        write_text(tmp / "model.onnx", "m2")
        write_text(tmp / "weights", "w2")
    assert [(out / f).read_text() for f in ("model.onnx", "weights", "plan.json")] == ["m2", "w2", "p"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_unwritable_places_are_input_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write there"):
        write_json({}, tmp_path / "file" / "x.json")
    with pytest.raises(InputError, match="not a directory"):
        with atomic_dir(tmp_path / "file"):
            pass
    (tmp_path / "link").symlink_to(tmp_path)
    with pytest.raises(InputError, match="symlink"):
        with atomic_dir(tmp_path / "link"):
            pass


def test_report_files_follow_umask(tmp_path, umask_027):
    """Bug: report files came out 0600 (mkstemp's mode)."""
    from toolchain.report import write_report

    d = tmp_path / "run"
    d.mkdir()
    write_json({"spec": "x", "params": {"before": 10, "after": 5}, "macs": {"before": 10, "after": 5},
                "groups": [{"id": "g", "before": 8, "after": 4, "prunable": True}], "removed": []},
               d / "summary.json")
    write_json({"version": 1, "channels": {}, "remove": []}, d / "plan.json")
    write_report(d)
    written = [p for p in (d / "report").iterdir()]
    assert {p.suffix for p in written} >= {".md", ".html", ".png"}
    assert all(_mode(p) == 0o640 for p in written), {p.name: oct(_mode(p)) for p in written}
