"""toolchain.data: DATA specs, deterministic stratified splits, shapes, normalisation, errors."""

import numpy as np
import pytest
import torch

from graphs.errors import InputError
from toolchain import data
from toolchain.data import dataset_info, load_dataset, make_loader


@pytest.mark.parametrize("spec,n", [("mnist5k", 5000), ("digits", 1797)])
def test_splits_deterministic_disjoint_stratified(spec, n):
    a = load_dataset(spec, (1, 1, 8, 8), split="train", seed=3).indices
    b = load_dataset(spec, (1, 1, 8, 8), split="train", seed=3).indices
    assert np.array_equal(a, b)
    assert not np.array_equal(a, load_dataset(spec, (1, 1, 8, 8), split="train", seed=4).indices)
    val = load_dataset(spec, (1, 1, 8, 8), split="val", seed=3)
    calib = load_dataset(spec, (1, 1, 8, 8), split="calib", seed=3)
    assert not set(a) & set(val.indices)
    assert len(a) + len(val) == n == len(load_dataset(spec, (1, 1, 8, 8), split="all"))
    assert abs(len(a) - 0.8 * n) <= 10
    assert np.array_equal(calib.indices, a[:data.CALIB_SIZE])
    labels = dataset_info(spec)  # sizes reported by dataset_info agree
    assert labels["size"] == n and labels["num_classes"] == 10
    expected = {"mnist5k": (4000, 1000), "digits": (1438, 359)}[spec]  # 80/20, stratified rounding
    assert (labels["splits"]["train"], labels["splits"]["val"]) == expected == (len(a), len(val))
    assert labels["splits"]["calib"] == len(calib) == data.CALIB_SIZE and labels["splits"]["all"] == n
    y_all = load_dataset(spec, (1, 1, 8, 8), split="all").labels
    tr = load_dataset(spec, (1, 1, 8, 8), split="train", seed=3).labels
    for c in range(10):  # every class keeps ~80% of its samples in train
        assert abs((tr == c).sum() - 0.8 * (y_all == c).sum()) <= 1
    assert len(set(calib.labels.tolist())) == 10  # calib is a mixed sample, not one class


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (1, 3, 28, 28)])
@pytest.mark.parametrize("spec", ["mnist5k", "digits"])
def test_shapes_dtype_labels(spec, shape):
    ds = load_dataset(spec, shape, split="val")
    x, y = ds[0]
    assert x.shape == shape[1:] and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grayscale replicated
    loader = make_loader(spec, shape, "val", 64)
    xb, yb = next(iter(loader))
    assert xb.shape == (64, *shape[1:]) and xb.dtype == torch.float32
    assert set(ds.labels.tolist()) == set(range(10)) and ds.num_classes == 10


@pytest.mark.parametrize("spec", ["mnist5k", "digits"])
def test_normalisation_zero_mean(spec):
    ds = load_dataset(spec, (3, 28, 28), split="train")
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    assert abs(xs.mean().item()) < 0.05
    assert 0.7 < xs.std().item() < 1.3
    raw = load_dataset(spec, (3, 28, 28), split="train", normalize=None)[0][0]
    assert raw.min() >= 0 and raw.max() <= 1


def test_augmentation_changes_pixels_not_labels():
    plain = load_dataset("mnist5k", (3, 32, 32), split="train")
    aug = load_dataset("mnist5k", (3, 32, 32), split="train", augment=True)
    changed = 0
    for i in range(32):
        (x0, y0), (x1, y1) = plain[i], aug[i]
        assert y0 == y1 and x1.shape == x0.shape
        changed += not torch.equal(x0, x1)
    assert changed >= 20  # 1 in 81 crops is the identity
    # evaluation splits are never augmented
    val_aug = load_dataset("mnist5k", (3, 32, 32), split="val", augment=True)
    assert torch.equal(val_aug[0][0], load_dataset("mnist5k", (3, 32, 32), split="val")[0][0])


def _write_pngs(root, classes, per_class=4, size=(20, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_imagefolder(tmp_path):
    _write_pngs(tmp_path / "flat", ["cat", "dog", "eel"], per_class=5)
    spec = f"imagefolder:{tmp_path / 'flat'}"
    info = dataset_info(spec)
    assert info["num_classes"] == 3 and info["size"] == 15
    tr = load_dataset(spec, (1, 3, 32, 32), split="train")
    va = load_dataset(spec, (1, 3, 32, 32), split="val")
    assert len(tr) == 12 and len(va) == 3 and not set(tr.indices) & set(va.indices)
    x, y = tr[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y in (0, 1, 2)
    raw = load_dataset(spec, (1, 3, 32, 32), split="train", normalize=None)[0][0]
    assert raw[:, :4].abs().max() == 0 and raw[:, 16].abs().max() > 0  # 20x12 letterboxed
    gray = load_dataset(spec, (1, 1, 16, 16), split="val")[0][0]
    assert gray.shape == (1, 16, 16)
    # train/ and val/ subfolders are the splits
    _write_pngs(tmp_path / "tv" / "train", ["a", "b"], per_class=3)
    _write_pngs(tmp_path / "tv" / "val", ["a", "b"], per_class=2)
    spec = f"imagefolder:{tmp_path / 'tv'}"
    assert len(load_dataset(spec, (3, 8, 8), split="train")) == 6
    assert sorted(load_dataset(spec, (3, 8, 8), split="val").labels.tolist()) == [0, 0, 1, 1]
    xb, yb = next(iter(make_loader(spec, (1, 3, 8, 8), "train", 4, augment=True)))
    assert xb.shape == (4, 3, 8, 8)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(50, 3, 16, 16), dtype=np.uint8)
    y = np.repeat(np.arange(5), 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = f"npz:{tmp_path / 'd.npz'}"
    ds = load_dataset(spec, (3, 16, 16), split="all", normalize=None)
    for i in (0, 17, 49):
        xi, yi = ds[i]
        assert yi == y[i]
        assert torch.allclose(xi, torch.from_numpy(x[i]).float() / 255)
    assert dataset_info(spec)["num_classes"] == 5
    assert len(load_dataset(spec, (3, 16, 16), split="train")) == 40
    np.savez(tmp_path / "g.npz", x=rng.random((20, 8, 8)).astype(np.float32), y=np.arange(20) % 2)
    xg, _ = load_dataset(f"npz:{tmp_path / 'g.npz'}", (1, 3, 8, 8), split="val")[0]
    assert xg.shape == (3, 8, 8)


def test_errors(tmp_path):
    def raises(match, fn, *a, **k):
        with pytest.raises(InputError, match=match) as exc:
            fn(*a, **k)
        assert "\n" not in str(exc.value)

    shape = (1, 3, 32, 32)
    raises(r"unknown DATA spec 'mnist'.*mnist5k, digits, imagefolder:PATH, cifar10:PATH",
           load_dataset, "mnist", shape)
    raises(r"unknown DATA spec 'foo:bar'", dataset_info, "foo:bar")
    raises(r"has no PATH", load_dataset, "npz:", shape)
    raises(r"unknown split 'test'", load_dataset, "digits", shape, split="test")
    raises(r"unknown normalize 'zscore'", load_dataset, "digits", shape, normalize="zscore")
    raises(r"input shape .* is not \(C,H,W\)", load_dataset, "digits", (32, 32))
    # folders
    raises(r"folder does not exist", load_dataset, f"imagefolder:{tmp_path / 'nope'}", shape)
    (tmp_path / "empty").mkdir()
    raises(r"no class subfolders with images", load_dataset, f"imagefolder:{tmp_path / 'empty'}",
           shape)
    _write_pngs(tmp_path / "bad", ["cat"], per_class=2)
    (tmp_path / "bad" / "dog").mkdir()
    (tmp_path / "bad" / "dog" / "notes.txt").write_text("not an image")
    raises(r"class folder .*dog has no images \(mislabelled", load_dataset,
           f"imagefolder:{tmp_path / 'bad'}", shape)
    # npz
    raises(r"file does not exist", load_dataset, f"npz:{tmp_path / 'none.npz'}", shape)
    np.savez(tmp_path / "nox.npz", images=np.zeros((4, 8, 8)), y=np.zeros(4, int))
    raises(r"no array 'x' \(found: images, y\)", load_dataset, f"npz:{tmp_path / 'nox.npz'}", shape)
    np.savez(tmp_path / "noy.npz", x=np.zeros((4, 8, 8)))
    raises(r"no array 'y'", load_dataset, f"npz:{tmp_path / 'noy.npz'}", shape)
    np.savez(tmp_path / "len.npz", x=np.zeros((4, 8, 8)), y=np.zeros(3, int))
    raises(r"x has 4 samples but y has 3", load_dataset, f"npz:{tmp_path / 'len.npz'}", shape)
    # CIFAR without the batches: never downloads
    raises(r"cifar10:.*folder does not exist", load_dataset, f"cifar10:{tmp_path / 'nope'}", shape)
    (tmp_path / "c10" / "cifar-10-batches-py").mkdir(parents=True)
    raises(r"no usable cifar-10-batches-py/ .*never downloaded", load_dataset,
           f"cifar10:{tmp_path / 'c10'}", shape)
    raises(r"no usable cifar-100-python/", load_dataset, f"cifar100:{tmp_path / 'empty'}", shape)
    raises(r"batch size", make_loader, "digits", shape, "train", 0)


def test_cifar_layout(tmp_path, monkeypatch):
    """A tiny fake cifar-10-batches-py/ (md5 check bypassed): train/test files map to train/val."""
    import pickle

    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    data._load_cifar.cache_clear()
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                 "labels": list(range(10))}
        (base / name).write_bytes(pickle.dumps(entry))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    for path in (tmp_path, base):  # PATH or the batches folder itself
        spec = f"cifar10:{path}"
        info = dataset_info(spec)
        assert info["size"] == 60 and info["num_classes"] == 10
        assert info["splits"] == {"train": 50, "val": 10, "calib": 50, "all": 60}
    tr = load_dataset(spec, (1, 3, 32, 32), split="train")
    assert sorted(tr.indices.tolist()) == list(range(50))
    raw = load_dataset(spec, (1, 3, 32, 32), split="val", normalize=None)
    x, y = raw[3]
    assert y == 3
    assert torch.allclose(x * 255, torch.from_numpy(
        pickle.loads((base / "test_batch").read_bytes())["data"][3].reshape(3, 32, 32)).float(),
        atol=1e-3)
    norm = load_dataset(spec, (1, 3, 32, 32), split="val")
    assert torch.allclose(norm[3][0][0], (x[0] - 0.4914) / 0.2023, atol=1e-5)  # SP-LAMP appx. E
    data._load_cifar.cache_clear()
