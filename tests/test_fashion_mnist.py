"""DATA `fashion-mnist`: the published 60k/10k split, a seeded stratified val from train, bad files."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graphs.errors import InputError
from toolchain.data import FASHION_MNIST_DIR, dataset_info, load_dataset

ROOT = Path(FASHION_MNIST_DIR)
SHAPE = (1, 28, 28)  # native size: no resize, so samples can be compared with the raw file


def _raw(name: str, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.open(ROOT / name).read(), np.uint8, offset=offset)


def test_published_split_and_seeded_val():
    info = dataset_info("fashion-mnist")
    assert info["size"] == 70000 and info["num_classes"] == 10 and info["native_shape"] == [1, 28, 28]
    assert info["splits"] == {"train": 48000, "val": 12000, "calib": 256, "all": 70000, "test": 10000}
    test = load_dataset("fashion-mnist", SHAPE, split="test", normalize=None)
    assert np.array_equal(test.indices, np.arange(60000, 70000))  # the published test set, not a re-split
    assert np.array_equal(test.labels, _raw("t10k-labels-idx1-ubyte.gz", 8))
    images = _raw("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    for i in (0, 4321, 9999):
        assert torch.allclose(test[i][0][0], torch.from_numpy(images[i].astype(np.float32)) / 255)
    tr = load_dataset("fashion-mnist", SHAPE, split="train", seed=5, normalize=None).indices
    va = load_dataset("fashion-mnist", SHAPE, split="val", seed=5, normalize=None)
    assert tr.max() < 60000 and va.indices.max() < 60000 and not set(tr) & set(va.indices)
    assert np.array_equal(tr, load_dataset("fashion-mnist", SHAPE, split="train", seed=5, normalize=None).indices)
    assert not np.array_equal(tr, load_dataset("fashion-mnist", SHAPE, split="train", seed=6, normalize=None).indices)
    assert np.bincount(va.labels).tolist() == [1200] * 10  # stratified: 20% of each class's 6,000


def _copy_files(dst: Path) -> Path:
    dst.mkdir()
    for f in ROOT.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def _cli_prune(onnx_path: Path, out: Path, root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COMPRESS_FASHION_MNIST_DIR=str(root))
    return subprocess.run([sys.executable, "-m", "toolchain.cli", "prune", str(onnx_path), "--budget", "0.5",
                           "--data", "fashion-mnist", "-o", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)


def _one_line_exit_2(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_missing_package_names_it(tmp_path, monkeypatch, resnet20_onnx):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("COMPRESS_FASHION_MNIST_DIR", str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"not found in .*apt-get install -y dataset-fashion-mnist") as exc:
        load_dataset("fashion-mnist", SHAPE)
    assert "\n" not in str(exc.value)
    proc = _cli_prune(resnet20_onnx, tmp_path / "out", tmp_path / "empty")
    _one_line_exit_2(proc, "dataset-fashion-mnist")
    assert not (tmp_path / "out").exists()


def test_corrupt_idx_files(tmp_path, monkeypatch, resnet20_onnx):
    root = _copy_files(tmp_path / "fm")
    monkeypatch.setenv("COMPRESS_FASHION_MNIST_DIR", str(root))
    labels = root / "t10k-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    cases = {  # how the file is spoiled -> what the one-line error says
        "truncated gzip": (good[: len(good) // 2], r"not a readable gzip file"),
        "not gzip": (b"hello", r"not a readable gzip file"),
        "wrong magic": (gzip.compress(b"\x00\x00\x08\x03" + bytes(100)), r"not an IDX file of 1-d"),
        "short payload": (gzip.compress(gzip.decompress(good)[:-10]), r"header says 10000"),
    }
    for what, (content, message) in cases.items():
        labels.write_bytes(content)
        with pytest.raises(InputError, match=message) as exc:
            load_dataset("fashion-mnist", SHAPE)
        assert "\n" not in str(exc.value) and "t10k-labels" in str(exc.value), what
    proc = _cli_prune(resnet20_onnx, tmp_path / "out", root)
    _one_line_exit_2(proc, "t10k-labels-idx1-ubyte.gz", "dataset-fashion-mnist")
    assert not (tmp_path / "out").exists()
