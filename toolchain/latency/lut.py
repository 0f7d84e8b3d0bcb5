"""Latency lookup tables (SP-LAMP eq. 7): whole-network latency with only one group narrowed to k
channels (coupled layers narrowed together, wherever they sit), or with one block removed.

Every entry is a ratio to the unpruned model, timed interleaved with it (measure.py), and stored in
the SQLite store under a key that says exactly when it can be reused. Profiling skips what the
store already holds, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from graphs.blocks import Block
from graphs.deps import Analysis, Group, analyze, round_count
from graphs.errors import InputError
from graphs.onnx_io import load_model, model_sha256
from graphs.plan import Plan
from toolchain.latency.backends import OnnxSource, PlanSource, get_backend
from toolchain.latency.measure import interleaved_ratio
from toolchain.latency.store import Key, Store


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

    @property
    def protocol(self) -> str:
        where = f"-{self.provider}" if self.provider else ""  # ORT's CUDA and TensorRT EPs share a GPU name
        return (f"interleaved-w{self.warmup}-r{self.runs}-p{self.pause_s:g}-s{int(self.spinning)}"
                f"-se{self.target_se or 0:g}-reachable{where}")

    def backend_options(self) -> dict:
        """One option set for every backend (base.get_backend drops host tuning a runtime has no use for)."""
        return {"spinning": self.spinning, "precision": self.precision, "provider": self.provider}


@dataclass
class Candidate:
    kind: str  # "group" | "block"
    item: str
    k: int  # kept units for groups; -1 for blocks
    plan: Plan


@dataclass
class Anchor:
    """A multi-change entry: many groups narrowed, or many blocks removed, at once."""

    kept: dict[str, int]
    removed: list[str]  # block ids
    ratio: float


@dataclass
class Table:
    """Measured ratios for one model on one backend/device; `base_ms` is the reference's median."""

    base_ms: float
    groups: dict[str, dict[int, float]] = field(default_factory=dict)  # gid -> {k: ratio}
    blocks: dict[str, float] = field(default_factory=dict)  # bid -> ratio
    anchors: dict[str, Anchor] = field(default_factory=dict)  # name -> anchor
    widths: dict[str, int] = field(default_factory=dict)  # gid -> full width (ratio 1.0 there)

    def group_ratio(self, gid: str, k: int) -> float:
        """Whole-network ratio with group `gid` at k units, interpolated linearly between samples.

        The samples are made monotone first (fewer channels is never slower; isotonic regression):
        a solver that picks the best-looking entries would otherwise pick measurement noise.
        """
        samples = self.groups.get(gid)
        if not samples:
            return 1.0
        ks = sorted(samples) + [self.widths[gid]]
        # Full width is the reference itself (exactly 1.0): samples above it are noise, capped there.
        rs = [min(r, 1.0) for r in monotone([samples[x] for x in sorted(samples)])] + [1.0]
        return float(np.interp(k, ks, rs))

    def block_ratio(self, bid: str) -> float:
        return self.blocks.get(bid, 1.0)


def monotone(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1), (m2, w2) = blocks.pop(-2), blocks.pop(-1)
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return [m for m, w in blocks for _ in range(int(w))]


def group_grid(group: Group, round_to: int, points: int) -> list[int]:
    """Widths to sample below full width: aligned to round_to, spread evenly down to the narrowest."""
    step = max(1, round_to // math.gcd(round_to, max(1, group.multiplicity)))
    aligned = list(range(step, group.channels, step))
    if not aligned:
        return []
    picks = np.unique(np.round(np.linspace(0, len(aligned) - 1, points)).astype(int)) if points < len(aligned) \
        else np.arange(len(aligned))
    return [aligned[i] for i in picks]


def resolve_round_to(config: ProfileConfig, backend=None) -> ProfileConfig:
    """The config with round_to set: tables are sampled, and plans solved, on the backend's channel block."""
    if config.round_to is not None:
        return config
    backend = backend or get_backend(config.backend, **config.backend_options())
    return replace(config, round_to=backend.channel_alignment())


def anchor_widths(analysis: Analysis, fraction: float, round_to: int) -> dict[str, int]:
    """Kept units per prunable group when every group keeps `fraction` of its width, on the grid."""
    kept = {}
    for g in analysis.groups:
        if g.prunable:
            k = round_count(max(1, int(round(fraction * g.channels))), g.channels, g.multiplicity, round_to)
            if k < g.channels:
                kept[g.id] = k
    return kept


def anchor_name(fraction: float) -> str:
    return f"uniform-{fraction:.2f}"


def anchor_blocks(blocks: list[Block], fraction: float) -> list[str]:
    """Ids of `fraction` of the disjoint removable blocks, spread evenly through the network."""
    disjoint, taken = [], set()
    for b in blocks:  # topological order; a block overlapping an earlier pick is skipped
        if not taken & set(b.nodes):
            disjoint.append(b.id)
            taken |= set(b.nodes)
    n = int(round(fraction * len(disjoint)))
    if n < 1:
        return []
    return [disjoint[i] for i in np.unique(np.round(np.linspace(0, len(disjoint) - 1, n)).astype(int))]


def depth_anchor_name(fraction: float) -> str:
    return f"depth-{fraction:.2f}"


def candidates(analysis: Analysis, config: ProfileConfig) -> list[Candidate]:
    config = resolve_round_to(config)
    out = []
    if config.groups:
        for g in analysis.groups:
            if g.prunable:
                for k in group_grid(g, config.round_to, config.points):
                    # Which units stay does not change the latency: the first k skip scoring.
                    out.append(Candidate("group", g.id, k, Plan(channels={g.id: {"keep": list(range(k))}})))
    blocks = analysis.blocks if config.blocks else []
    for b in blocks:
        out.append(Candidate("block", b.id, -1, Plan(remove=[b.id])))
    if config.groups:
        for fraction in config.anchors:
            kept = anchor_widths(analysis, fraction, config.round_to)
            if len(kept) > 1:  # one group alone is already a group entry
                plan = Plan(channels={gid: {"keep": list(range(k))} for gid, k in kept.items()})
                out.append(Candidate("anchor", anchor_name(fraction), -1, plan))
    for fraction in config.depth_anchors if blocks else ():
        removed = anchor_blocks(blocks, fraction)
        if len(removed) > 1:  # one block alone is already a block entry
            out.append(Candidate("anchor", depth_anchor_name(fraction), -1, Plan(remove=removed)))
    return out


def candidate_source(base: OnnxSource, analysis: Analysis, candidate: Candidate) -> PlanSource:
    """What any backend loads for a candidate: its ONNX from surgery, or its torch module from sync."""
    return PlanSource(base, candidate.plan, analysis)


def _key(sha: str, candidate: Candidate, device: dict, config: ProfileConfig) -> Key:
    return Key(sha, candidate.kind, candidate.item, candidate.k, config.backend, device["device"], config.precision, config.batch,
               f"{device['runtime']} {device['runtime_version']}", config.protocol)


# A pruned candidate timed this much slower than the full model is timed again, once, and the second
# figure kept: on this host a glitch once put two 32-of-64 widths of resnet18 at 1.42x and 1.31x
# (0.95x in every other table), and least squares follows such outliers.
SUSPECT_RATIO = 1.05


def measure_pair(backend, reference_runner, candidate_model, config: ProfileConfig) -> dict:
    with backend.prepare(candidate_model, batch=config.batch) as runner:
        for _ in range(2):
            result = interleaved_ratio(runner, reference_runner, warmup=config.warmup, runs=config.runs,
                                       pause_s=config.pause_s, target_se=config.target_se,
                                       max_runs=3 * config.runs, only_if_reachable=True)
            if result.ratio <= SUSPECT_RATIO:
                break
    return {"ratio": result.ratio, "ref_median_ms": result.reference.median, "median_ms": result.candidate.median,
            "p90_ms": result.candidate.p90, "std_ms": result.candidate.std, "count": result.candidate.count}


def profile(onnx_path: str, store_path: str, config: ProfileConfig, progress=None, fresh: bool = False,
            ray_address: str | None = None, ray_resource: str | None = None) -> Table:
    """Measure what the store lacks for this model/backend/device, then return the full table."""
    if config.batch < 1:
        raise InputError(f"--batch must be >= 1, got {config.batch}")
    model = load_model(onnx_path)
    sha = model_sha256(model)
    analysis = analyze(model)
    backend = get_backend(config.backend, **config.backend_options())
    config = resolve_round_to(config, backend)
    if ray_address:
        from toolchain.latency import distributed

        device = distributed.worker_device(ray_address, ray_resource, config)
    else:
        device = backend.device()
    todo = candidates(analysis, config)
    if not todo:
        raise InputError(f"{onnx_path}: nothing to profile: no prunable group wider than --round-to "
                         f"{config.round_to} and no removable block")
    # Load the model in the backend before the store is touched: a model the backend refuses must
    # leave no store behind.
    base = OnnxSource(model)
    reference = None if ray_address else backend.prepare(base, batch=config.batch)
    try:
        return _profile_into(store_path, base, sha, analysis, backend, reference, device, todo, config, progress,
                             fresh, ray_address, ray_resource)
    finally:
        if reference is not None:
            reference.close()


def _profile_into(store_path, base, sha, analysis, backend, reference, device, todo, config, progress, fresh,
                  ray_address, ray_resource) -> Table:
    if ray_address:
        from toolchain.latency import distributed
    with Store(store_path) as store:
        store.bind(sha, config.backend, config.precision, config.batch, device["device"],
                   f"{device['runtime']} {device['runtime_version']}", device, fresh=fresh)
        missing = [c for c in todo if store.get(_key(sha, c, device, config)) is None]
        if progress is not None:
            progress.start(len(todo), len(todo) - len(missing))
        if ray_address:
            distributed.measure_on_ray(
                ray_address, ray_resource, base, missing,
                lambda c: candidate_source(base, analysis, c), config, device,
                lambda c, values: _record(store, sha, c, device, config, values, progress))
        else:
            for c in missing:
                values = measure_pair(backend, reference, candidate_source(base, analysis, c), config)
                _record(store, sha, c, device, config, values, progress)
        return load_table(store, sha, analysis, device, config)


def _record(store: Store, sha: str, candidate: Candidate, device: dict, config: ProfileConfig, values: dict,
            progress) -> None:
    store.put(_key(sha, candidate, device, config), values)
    if progress is not None:
        progress.advance(candidate)


def load_table(store: Store, sha: str, analysis: Analysis, device: dict, config: ProfileConfig) -> Table:
    rows = store.items(sha, config.backend, device=device["device"], precision=config.precision,
                       batch=config.batch, protocol=config.protocol,
                       runtime_version=f"{device['runtime']} {device['runtime_version']}")
    ref = [r["ref_median_ms"] for r in rows if r["ref_median_ms"]]
    table = Table(base_ms=float(np.median(ref)) if ref else float("nan"),
                  widths={g.id: g.channels for g in analysis.groups})
    for r in rows:
        if r["kind"] == "group":
            table.groups.setdefault(r["item"], {})[int(r["k"])] = float(r["ratio"])
        elif r["kind"] == "block":
            table.blocks[r["item"]] = float(r["ratio"])
    anchors = {r["item"]: float(r["ratio"]) for r in rows if r["kind"] == "anchor"}
    for fraction in config.anchors:
        if anchor_name(fraction) in anchors:
            table.anchors[anchor_name(fraction)] = Anchor(anchor_widths(analysis, fraction, config.round_to), [],
                                                          anchors[anchor_name(fraction)])
    blocks = analysis.blocks if config.depth_anchors else []
    for fraction in config.depth_anchors:
        if depth_anchor_name(fraction) in anchors:
            table.anchors[depth_anchor_name(fraction)] = Anchor({}, anchor_blocks(blocks, fraction),
                                                                anchors[depth_anchor_name(fraction)])
    return table
