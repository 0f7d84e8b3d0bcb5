"""The bookkeeping behind dependency analysis: channel ids, their union-find, and tensor layouts.

Every channel a producer (Conv, Gemm, MatMul, a graph input, an unknown op) creates gets a global
integer id. Ops that force channels to be pruned together (Add, a channel shuffle, a grouped conv)
union ids. A tensor's `Layout` says which ids lie along which of its axes, so Concat, Split,
Reshape and Transpose are plain numpy operations on the id array.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ChannelSets:
    """Union-find over channel ids, with a 'frozen' reason attached to any id that must stay."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.frozen: dict[int, str] = {}

    def allocate(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(np.asarray(a).ravel().tolist(), np.asarray(b).ravel().tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                lo, hi = min(rx, ry), max(rx, ry)  # the lower (earlier) id stays the root
                self.parent[hi] = lo

    def union_all(self, ids: np.ndarray) -> None:
        flat = np.asarray(ids).ravel()
        if flat.size > 1:
            self.union(np.full(flat.size - 1, flat[0]), flat[1:])

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        for i in np.asarray(ids).ravel().tolist():
            self.frozen.setdefault(int(i), reason)

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.find(int(i)) for i in np.asarray(ids).ravel()], dtype=np.int64).reshape(np.shape(ids))


@dataclass
class Layout:
    """Channel ids of a tensor: `ids` spans tensor axes `axes` (contiguous, in order).

    `inner` > 1 means the last spanned axis holds each channel `inner` times in a row (a feature
    vector flattened from C x H x W keeps channel c at positions c*H*W ... (c+1)*H*W - 1).
    """

    ids: np.ndarray
    axes: tuple[int, ...]
    rank: int
    inner: int = 1

    @property
    def axis(self) -> int:
        return self.axes[0]

    def moved(self, **changes) -> "Layout":
        values = dict(ids=self.ids, axes=self.axes, rank=self.rank, inner=self.inner)
        values.update(changes)
        return Layout(**values)

    def positions(self) -> np.ndarray:
        """Ids per element along the (single) channel axis, with `inner` repeats expanded."""
        return np.repeat(self.ids.ravel(), self.inner)


@dataclass
class ParamSlice:
    """Axis `axis` of initializer `init` follows channels: element j belongs to channel `ids[j]`."""

    init: str
    axis: int
    ids: np.ndarray
    role: str  # "out" (a producer's filters), "in" (a consumer's input channels), "param" (BN, bias, scale)
    node: str


@dataclass
class Fix:
    """A non-parameter edit that pruning requires (a conv's group count, a slice bound, a shape)."""

    kind: str
    node: str
    ids: list[np.ndarray] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
