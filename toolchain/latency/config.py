"""What a latency table is measured with (backend, precision, batch, protocol, sampled widths), and
the channel block the widths are aligned to."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from graphs.errors import InputError
from toolchain.latency.backends import get_backend


@dataclass
class ProfileConfig:
    backend: str = "ort"
    precision: str = "fp32"
    batch: int = 1
    round_to: int | None = None  # None: the backend's channel_alignment() (16 for ORT on an AVX-512 CPU)
    # Widths sampled per group below full width (full width is the reference). Three suffice: the
    # per-layer model (predict.py) fits a saving per MAC, and a fourth point did not improve it
    # (offline on resnet18's measured plans: worst error 8.8% with 3 points, 9.2% with 4).
    points: int = 3
    # 2 + 20 pairs, extended while the ratio's standard error exceeds target_se: resnet50's 126 entries
    # fit the 10-minute goal, and the per-layer fit averages what noise is left.
    warmup: int = 2
    runs: int = 20
    pause_s: float = 0.0
    spinning: bool = False  # ORT: idle threads must not spin, so two interleaved sessions can share 2 cores
    provider: str | None = None  # where the backend runs: ort cpu|cuda|tensorrt, torch cpu|cuda (None: its default)
    # Extend an entry's runs (up to 3x) until the ratio's standard error fits, while it still can.
    target_se: float | None = 0.01
    groups: bool = True
    blocks: bool = True
    # Multi-change entries: every prunable group at these fractions of its width. They calibrate the
    # per-layer model on plans that change many layers at once (predict.py).
    anchors: tuple[float, ...] = (0.75, 0.5)
    # Depth anchors: these fractions of a disjoint set of removable blocks removed at once. Single-block
    # entries alone let the fit extrapolate to many removals: on a noisy CI host resnet20's seven
    # single-block savings summed past 100%, and removing them all was predicted at -0.01 of the
    # unpruned latency where it measured 0.26. They calibrate the depth part of the model.
    depth_anchors: tuple[float, ...] = (0.5, 1.0)
    # What to measure (lut.py): "full" the whole grid; "reduced" the anchors, then the entries active
    # selection picks until the predicted error bound of budget-relevant plans is <= target_error
    # (relative, ~2 standard deviations) or max_measurements entries (anchors included; None: a
    # quarter of the full grid) are measured;
    # "prior" the anchors only, the rest from the device profile. Not part of the key: an entry is
    # the same measurement whichever mode chose it, so a reduced table can later grow into a full one.
    table: str = "full"
    max_measurements: int | None = None
    target_error: float = 0.05
    # Stored anchors older than this are re-timed before the table is used (recheck.py): the host's
    # timing drifts over hours, and the anchors set the per-layer model's level. 0: always; None: never.
    # Not part of the key: a re-timed anchor replaces its row.
    recheck_after_s: float | None = 6 * 3600.0

    @property
    def protocol(self) -> str:
        where = f"-{self.provider}" if self.provider else ""  # ORT's CUDA and TensorRT EPs share a GPU name
        return (f"interleaved-w{self.warmup}-r{self.runs}-p{self.pause_s:g}-s{int(self.spinning)}"
                f"-se{self.target_se or 0:g}-reachable{where}")

    def backend_options(self) -> dict:
        """One option set for every backend (base.get_backend drops host tuning a runtime has no use for)."""
        return {"spinning": self.spinning, "precision": self.precision, "provider": self.provider}


TABLE_MODES = ("full", "reduced", "prior")


def check_table_mode(config: ProfileConfig) -> None:
    """The table options and the batch size, checked before any work (a typo must not cost a table build)."""
    if config.batch < 1:
        raise InputError(f"--batch must be >= 1, got {config.batch}")
    if config.table not in TABLE_MODES:
        raise InputError(f"unknown table mode {config.table!r}: {', '.join(TABLE_MODES)}")
    if config.max_measurements is not None and config.max_measurements < 1:
        raise InputError(f"--max-measurements must be >= 1, got {config.max_measurements}")
    if not 0 < config.target_error < 1:
        raise InputError(f"--target-error must be between 0 and 1, got {config.target_error}")
    if config.recheck_after_s is not None and not config.recheck_after_s >= 0:
        raise InputError(f"--recheck-after must be >= 0 hours (inf: never), got {config.recheck_after_s / 3600:g}")


def recheck_seconds(hours: float) -> float | None:
    """--recheck-after H in seconds; inf (never re-time) is None. A negative H is left for the check."""
    return None if math.isinf(hours) and hours > 0 else hours * 3600.0


def resolve_round_to(config: ProfileConfig, backend=None) -> ProfileConfig:
    """The config with round_to set: tables are sampled, and plans solved, on the backend's channel block."""
    if config.round_to is not None:
        return config
    backend = backend or get_backend(config.backend, **config.backend_options())
    return replace(config, round_to=backend.channel_alignment())

