"""`compress build`'s checks, run through the runner Protocol: top-1 of FP32 vs the artifact on labelled
validation data, Polygraphy's Comparator on the outputs, and latency at the OPT batch."""
from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np

from graphs.errors import InputError
from toolchain.outputs import flatten_outputs

# Polygraphy Comparator tolerances (median absolute/relative error, per precision): FP32 artifacts are
# fused/optimised graphs (float reassociation only); FP16 keeps ~3 decimal digits; INT8 QDQ far less.
COMPARE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}
COMPARE_BATCHES = 4


def val_batches(val: str, input_shape, count: int, batch: int, normalize: str = "auto"):
    """(x, y) numpy batches of `val`'s val split, `count` samples in all."""
    from toolchain.data import make_loader

    loader = make_loader(val, input_shape, "val", batch_size=batch, seed=0, shuffle=False, normalize=normalize)
    n = 0
    for x, y in loader:
        x, y = x.numpy()[: count - n], y.numpy()[: count - n]
        n += len(x)
        yield x, y
        if n >= count:
            return


def _outputs(runner, x: np.ndarray) -> list[np.ndarray]:
    """Every output leaf (toolchain.outputs.flatten_outputs: nested runner results too), as float32."""
    return [np.asarray(o, dtype=np.float32) for o in flatten_outputs(runner.infer({next(iter(runner.inputs)): x}))]


class _OutputStats:
    """Per output leaf over all batches: max |reference - artifact|, max |reference|, worst row cosine."""

    def __init__(self):
        self.diff: list[float] = []
        self.scale: list[float] = []
        self.cosine: list[float] = []

    def add(self, ref: list[np.ndarray], art: list[np.ndarray], k: int) -> None:
        if len(ref) != len(art) or any(a.shape != b.shape for a, b in zip(ref, art)):
            raise InputError(f"the artifact's outputs ({len(art)} tensors) do not match the FP32 model's ({len(ref)})")
        if not self.diff:
            self.diff, self.scale, self.cosine = [0.0] * len(ref), [0.0] * len(ref), [1.0] * len(ref)
        for i, (a, b) in enumerate(zip(ref, art)):
            a, b = a[:k].reshape(k, -1).astype(np.float64), b[:k].reshape(k, -1).astype(np.float64)
            self.diff[i] = max(self.diff[i], float(np.abs(a - b).max(initial=0.0)))
            self.scale[i] = max(self.scale[i], float(np.abs(a).max(initial=0.0)))
            den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
            self.cosine[i] = min(self.cosine[i], float(((a * b).sum(1) / den).min(initial=1.0)))

    def as_list(self) -> list[dict]:
        """Relative per output (DESIGN.md's parity rule): diff / max(1, max |reference|)."""
        return [{"output": i, "max_abs_diff": d, "scale": s, "relative_diff": d / max(1.0, s), "cosine_min": c}
                for i, (d, s, c) in enumerate(zip(self.diff, self.scale, self.cosine))]


def accuracy_check(reference, artifact, val: str, input_shape, count: int, batch: int, pad: bool = False,
                   precision: str = "fp32", normalize: str = "auto") -> dict:
    """Top-1 (first output) of the FP32 reference runner and of the artifact's runner on `val`'s val split;
    every output leaf compared (max abs and relative diff, cosine), and Polygraphy's Comparator on the
    first batches. pad: a fixed-batch model gets a short last batch
    zero-padded, the padding dropped."""
    right_ref = right_art = agree = n = 0
    cos, compared, stats = [], [], _OutputStats()
    for x, y in val_batches(val, input_shape, count, batch, normalize):
        k = len(x)
        if pad and k < batch:
            x = np.concatenate([x, np.zeros((batch - k, *x.shape[1:]), x.dtype)])
        if len(compared) < COMPARE_BATCHES:
            compared.append(x)
        ref, art = _outputs(reference, x), _outputs(artifact, x)
        stats.add(ref, art, k)
        # top-1 reads the first output (the class scores); every output is compared in `stats`
        a, b = ref[0][:k].reshape(k, -1), art[0][:k].reshape(k, -1)
        pa, pb = a.argmax(1), b.argmax(1)
        right_ref += int((pa == y).sum())
        right_art += int((pb == y).sum())
        agree += int((pa == pb).sum())
        num = (a.astype(np.float64) * b).sum(1)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos.extend((num / np.maximum(den, 1e-30)).tolist())
        n += k
    if n == 0:
        raise InputError(f"validation data {val!r} has an empty val split")
    t_ref, t_art = 100.0 * right_ref / n, 100.0 * right_art / n
    outputs = stats.as_list()
    return {"val": val, "split": "val", "samples": n, "top1_fp32": round(t_ref, 3), "top1": round(t_art, 3),
            "top1_drop_points": round(t_ref - t_art, 3), "top1_agreement": round(100.0 * agree / n, 3),
            "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
            "outputs": outputs, "worst_relative_diff": max(o["relative_diff"] for o in outputs),
            "comparator": compare_outputs(reference, artifact, compared, precision)}


def _as_polygraphy(runner, name: str):
    """Any runner of ours as a Polygraphy runner (Comparator takes those): infer and input metadata."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class Adapter(BaseRunner):
        def activate_impl(self):
            pass

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for n, (shape, dtype) in runner.inputs.items():
                meta.add(n, dtype, (None, *shape[1:]))  # any batch
            return meta

        def infer_impl(self, feed_dict):
            t0 = time.perf_counter()
            outs = runner.infer(dict(feed_dict))
            self.inference_time = time.perf_counter() - t0  # the Comparator sums it
            return OrderedDict((f"output{i}", np.asarray(o, dtype=np.float32))
                               for i, o in enumerate(flatten_outputs(outs)))

        def deactivate_impl(self):
            pass

    return Adapter(name=name)


def compare_outputs(reference, artifact, batches: list[np.ndarray], precision: str) -> dict:
    """Polygraphy's Comparator: the artifact's outputs vs the FP32 reference's, batch by batch."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    tol = COMPARE_TOLERANCE[precision]
    name = next(iter(reference.inputs))
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # its report would land on stdout (--json prints there)
        results = Comparator.run([_as_polygraphy(reference, "fp32"), _as_polygraphy(artifact, precision)],
                                 data_loader=[{name: x} for x in batches])
        accuracy = Comparator.compare_accuracy(
            results, compare_func=SimpleCompareFunc(atol=tol, rtol=tol, check_error_stat="median"))
    return {"tool": "polygraphy Comparator", "passed": bool(accuracy), "check_error_stat": "median",
            "atol": tol, "rtol": tol, "batches": len(batches)}


def latency(candidate, reference, runs: int | None) -> dict:
    """The artifact's latency at its fixed (OPT) batch; with a reference (the FP32 model on the same
    backend) also the ratio to it, interleaved run by run."""
    from toolchain.latency.measure import interleaved_ratio, time_runner

    if reference is None:
        st = time_runner(candidate, **({} if runs is None else {"runs": runs}))
        return {"median_ms": st.median, "p90_ms": st.p90, "cv": st.cv, "runs": st.count,
                "protocol": "time_runner (10 warm-up)"}
    r = interleaved_ratio(candidate, reference, **({} if runs is None else {"runs": runs, "target_se": None,
                                                                            "warmup": 3}))
    return {"median_ms": r.candidate.median, "fp32_median_ms": r.reference.median, "ratio_to_fp32": r.ratio,
            "ratio_se": r.ratio_se, "runs": r.candidate.count,
            "protocol": "interleaved with the FP32 model, median of per-pair ratios"}
