"""Calibration data: the exact tensors a quantizer sees, their digest, and onnxruntime readers.

CALIB forms (the `--calib` option):
  a DATA spec (`mnist5k`, `digits`, `imagefolder:PATH`, `cifar10:PATH`, `cifar100:PATH`, `npz:PATH`)
      -> `toolchain.data.make_loader(spec, input_shape, "calib", ...)`: the deterministic calibration
         split (a seeded, stratified subset of the train split), with the same preprocessing
         (resize, channels, normalisation) as training and evaluation;
  FILE.npy             an array of ready model inputs (N,C,H,W) (or one sample (C,H,W));
  FILE.npz             ready model inputs under key `x` (or the file's only array);
  DIR                  a folder of .npy / .npz files as above (sorted by name, concatenated);
                       a folder without any is read as `imagefolder:DIR`.
Ready inputs (.npy/.npz files without the `npz:` prefix) are fed as they are: already preprocessed.

The first `count` samples are used, always the same ones for the same data: `digest_array` of them is the
sha256 of exactly those float32 tensors (shape and bytes), the key calibration caches are stored under.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from graphs.errors import InputError

try:  # the reader is an onnxruntime CalibrationDataReader; TensorRT's calibrator uses it without ORT
    from onnxruntime.quantization import CalibrationDataReader as _ReaderBase
except ImportError:  # pragma: no cover - onnxruntime is absent only on TensorRT-only images
    _ReaderBase = object

DEFAULT_COUNT = 256   # toolchain.data.CALIB_SIZE: the whole calibration split of a DATA spec
_DATA_PREFIXES = ("imagefolder:", "cifar10:", "cifar100:", "npz:")


def _shape_str(shape) -> str:
    return "(" + ",".join(str(int(d)) if isinstance(d, (int, np.integer)) and d >= 0 else "N"
                          for d in shape) + ")"


def _chw(input_shape) -> tuple[int, int, int]:
    try:
        dims = [int(d) for d in input_shape]
    except (TypeError, ValueError):
        raise InputError(f"model input shape {input_shape!r} is not a list of integers") from None
    if len(dims) == 4:
        dims = dims[1:]
    if len(dims) != 3 or any(d <= 0 for d in dims):
        raise InputError(f"model input shape {input_shape!r}: expected (N,C,H,W) with positive C,H,W")
    return tuple(dims)


def _array_file(path: Path) -> np.ndarray:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"calibration file {path}: not a readable .npy/.npz ({type(exc).__name__})") from None
    if isinstance(z, np.ndarray):
        return z
    keys = list(z.files)
    if "x" in keys:
        return z["x"]
    if len(keys) == 1:
        return z[keys[0]]
    raise InputError(f"calibration file {path}: no array 'x' and several arrays ({', '.join(keys[:5])}); "
                     "store the model inputs as x")


def _tensor_files(path: Path) -> list[Path] | None:
    """The .npy/.npz files CALIB names, or None when it is not a tensor source."""
    if path.is_file() and path.suffix.lower() in (".npy", ".npz"):
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".npy", ".npz"))
        return files or None
    return None


def _from_tensors(files: list[Path], chw: tuple[int, int, int], count: int) -> np.ndarray:
    out, n = [], 0
    for f in files:
        a = _array_file(f)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or tuple(a.shape[1:]) != chw:
            raise InputError(f"calibration data {f} has shape {_shape_str(a.shape)} but the model input is "
                             f"{_shape_str((-1, *chw))}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise InputError(f"calibration data {f} has dtype {a.dtype}, expected numbers")
        a = a.astype(np.float32, copy=False)
        if not np.all(np.isfinite(a)):
            raise InputError(f"calibration data {f} holds NaN or infinite values")
        out.append(a[: count - n])
        n += len(out[-1])
        if n >= count:
            break
    if n == 0:
        raise InputError(f"calibration data {files[0].parent} holds no samples")
    return np.ascontiguousarray(np.concatenate(out))


def _from_spec(spec: str, chw: tuple[int, int, int], count: int, split: str = "calib",
               normalize: str = "auto") -> np.ndarray:
    from toolchain.data import make_loader  # torch: only when a DATA spec is used

    loader = make_loader(spec, (1, *chw), split, batch_size=min(count, 128), seed=0, shuffle=False,
                         normalize=normalize)
    out, n = [], 0
    for x, _ in loader:
        out.append(x.numpy()[: count - n])
        n += len(out[-1])
        if n >= count:
            break
    if n == 0:
        raise InputError(f"calibration data {spec!r} has an empty {split} split")
    return np.ascontiguousarray(np.concatenate(out).astype(np.float32, copy=False))


def resolve(calib: str) -> tuple[str, object]:
    """('tensors', [files]) or ('spec', DATA spec) for a CALIB string."""
    if not isinstance(calib, str) or not calib.strip():
        raise InputError("empty calibration data: give a DATA spec, a .npy/.npz file or a folder")
    calib = calib.strip()
    if calib in ("mnist5k", "digits") or calib.startswith(_DATA_PREFIXES):
        return "spec", calib
    p = Path(calib).expanduser()
    if not p.exists():
        raise InputError(f"calibration data {calib!r}: no such file or folder, and not a DATA spec "
                         "(mnist5k, digits, imagefolder:PATH, cifar10:PATH, cifar100:PATH, npz:PATH)")
    files = _tensor_files(p)
    if files is not None:
        return "tensors", files
    if p.is_dir():
        return "spec", f"imagefolder:{p}"
    raise InputError(f"calibration data {calib!r}: a file that is not .npy or .npz")


def load_calibration(calib: str, input_shape, count: int = DEFAULT_COUNT, normalize: str = "auto") -> np.ndarray:
    """The first `count` calibration tensors (float32, (n,C,H,W)) for a model input of `input_shape`;
    a DATA spec is normalised as `normalize` says (tensor files are taken as they are)."""
    if not isinstance(count, int) or count < 1:
        raise InputError(f"calibration count must be a positive integer, got {count!r}")
    chw = _chw(input_shape)
    kind, what = resolve(calib)
    return _from_tensors(what, chw, count) if kind == "tensors" else _from_spec(what, chw, count, normalize=normalize)


def digest_array(x: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{x.dtype.str}{tuple(x.shape)}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


class ArrayReader(_ReaderBase):
    """An onnxruntime.quantization CalibrationDataReader over an in-memory (n,C,H,W) array."""

    def __init__(self, x: np.ndarray, input_name: str = "input", batch_size: int = 32):
        self.x, self.name, self.batch_size = x, input_name, max(1, int(batch_size))
        self.batches_read = 0
        self._i = 0

    def get_next(self) -> dict | None:
        if self._i >= len(self.x):
            return None
        b = self.x[self._i:self._i + self.batch_size]
        self._i += len(b)
        self.batches_read += 1
        return {self.name: b}

    def rewind(self) -> None:
        self._i = 0

    def __iter__(self):
        self.rewind()
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)
