"""Pixels -> a model's input: channels, size, normalisation and augmentation, with torchvision transforms v2.

Grayscale is replicated to C channels (RGB to one channel: torchvision's luminance), the image is resized
bilinearly (antialiased when shrinking) to HxW when the aspect ratio matches, otherwise resized to fit
inside HxW and zero-padded (centred), scaled to [0,1] and then normalised.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from graphs.errors import InputError

__all__ = ["CROP_PADDING", "NORMALIZE_CHOICES", "augmentation", "check_normalize", "convert", "dataset_stats", "named_stats", "normalization",
           "parse_shape", "read_image", "to_channels"]

CROP_PADDING = 4
# SP-LAMP appendix E gives these CIFAR-10 constants verbatim. The std is the widely copied
# (0.2023, 0.1994, 0.2010), not the true per-pixel std (0.2470, 0.2435, 0.2616); we follow the paper
# so that models trained with its recipe see the inputs they were trained on.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# TensorFlow-trained weights (Inception, EfficientNet-Lite, timm's tf_* models) expect [-1, 1] inputs.
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
_NAMED_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
                "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                "inception": (INCEPTION_MEAN, INCEPTION_STD)}
NORMALIZE_CHOICES = ("auto", "none", "dataset", *_NAMED_STATS)
_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights, for constants mapped to 1 channel


def parse_shape(input_shape) -> tuple[int, int, int]:
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


def to_channels(x: torch.Tensor, c: int) -> torch.Tensor:
    """(N,C0,H,W) -> (N,c,H,W): replicate grayscale, luminance for RGB -> 1."""
    c0 = x.shape[1]
    if c0 == c:
        return x
    if c0 == 1:
        return x.expand(-1, c, -1, -1)
    if c0 == 3 and c == 1:
        return TF.rgb_to_grayscale(x)
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
        x = TF.resize(x, [nh, nw], interpolation=v2.InterpolationMode.BILINEAR, antialias=True).clamp_(0.0, 1.0)
    if (nh, nw) != (h, w):
        top, left = (h - nh) // 2, (w - nw) // 2
        x = TF.pad(x, [left, top, w - nw - left, h - nh - top])
    return x


def convert(raw: np.ndarray, scale: float, shape: tuple[int, int, int]) -> torch.Tensor:
    """Raw (N,C0,H0,W0) pixels -> float32 (N,C,H,W) in [0,1]."""
    x = torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float32)
    if scale != 1.0:
        x = x / scale
    return _to_size(to_channels(x, shape[0]), shape[1], shape[2]).contiguous()


def read_image(path: str, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot read image {path} ({type(exc).__name__})") from None
    return arr[None, None] if arr.ndim == 2 else arr.transpose(2, 0, 1)[None]


def check_normalize(normalize) -> None:
    """The one check of a normalisation name (every command, recipe and loader), before any work."""
    if normalize is None or normalize is False:
        return
    if not isinstance(normalize, str) or normalize not in NORMALIZE_CHOICES:
        raise InputError(f"unknown normalize {normalize!r}; expected one of {', '.join(NORMALIZE_CHOICES)} or None")


def named_stats(name: str, c: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A named set's constants mapped to c channels (RGB constants for a 1-channel input: luminance)."""
    mean, std = _NAMED_STATS[name]
    if c == 3:
        return mean, std
    if c == 1:
        return (sum(w * m for w, m in zip(_LUMA, mean)),), (sum(w * s for w, s in zip(_LUMA, std)),)
    raise InputError(f"normalisation constants for 3 channels do not fit {c} channels")


def dataset_stats(chunks, scale: float, c: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0,1] over raw (N,C0,H,W) pixel chunks, at native resolution."""
    total = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for raw in chunks:
        x = to_channels(torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float64) / scale, c)
        total += x.sum(dim=(0, 2, 3))
        sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def augmentation(shape: tuple[int, int, int], flip: bool) -> v2.Compose:
    """Random crop with zero padding 4 (the CIFAR recipe), plus a horizontal flip where allowed.

    The draws come from torch's global RNG: train() seeds it, and DataLoader seeds each worker's."""
    steps = [v2.RandomCrop(list(shape[1:]), padding=CROP_PADDING)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def normalization(mean, std) -> v2.Normalize:
    return v2.Normalize(list(mean), list(std))
