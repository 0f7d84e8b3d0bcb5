"""The one writer of output files and directories: a reader sees the old content or the new, never half.

A file is written to a temporary file in the same directory (same filesystem, so the rename is
atomic), flushed to disk, given the mode a plain open() would give under the user's umask (mkstemp
makes 0600), renamed over the target, and the directory entry is flushed too. A directory is built
as a temporary sibling and renamed once at the end.

It lives in `graphs/` because both sides write files and `graphs` must not import torch; libraries
that write to a path themselves (safetensors, torch.save, matplotlib) get the temporary path from
`atomic_file`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from graphs.errors import InputError


def umask_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the user's umask (mkstemp/mkdtemp use 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a directory's contents (a directory: its entries, i.e. a rename) to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; whatever is written there replaces `path` on a clean exit.

    On an exception (or a kill) `path` is untouched and the temporary file is removed (a kill -9
    leaves a hidden `.NAME.*.tmp`, never a truncated `NAME`).
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # e.g. a missing directory or a regular file where one is expected
        raise InputError(f"{path}: cannot write there ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_path(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(data, path: str | os.PathLike) -> None:
    """JSON, indented, one trailing newline."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The resolved directory `atomic_dir` would write, or InputError; lets a long job refuse it first."""
    if Path(out_dir).is_symlink():  # before resolve(), which follows the link out of where we were told
        raise InputError(f"{out_dir}: is a symlink; give a real directory")
    target = Path(out_dir).resolve()
    if target.exists() and not target.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    return target


def _finish_dir(tmp: Path) -> None:
    """mkdtemp/mkstemp make 0700/0600: give the user's umask instead; flush everything written."""
    for path in tmp.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, umask_mode(directory=path.is_dir()))
        fsync_path(path)
    os.chmod(tmp, umask_mode(directory=True))
    fsync_path(tmp)


@contextmanager
def atomic_dir(out_dir: str | os.PathLike, *, start_from: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary directory next to `out_dir`; on a clean exit it becomes `out_dir` in one rename.

    `start_from` copies an existing directory in first: a stage that changes some files of a
    directory (finetune: model.onnx and its weights) then swaps the whole directory, so the files
    never disagree. An existing `out_dir` is moved aside and deleted after the new one is in place.
    """
    target = check_out_dir(out_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write there ({exc.strerror})") from None
    try:
        if start_from is not None:
            shutil.copytree(start_from, tmp, symlinks=True, dirs_exist_ok=True)
        yield tmp
        _finish_dir(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "dir")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
