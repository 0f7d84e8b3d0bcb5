"""What the CPU is (name, SIMD channel block, usable cores), read from /proc/cpuinfo and the process's
affinity; used by the CPU backends."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo(field: str) -> str:
    """The value of the first `field` line of /proc/cpuinfo ('' where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_channel_block() -> int:
    """Channels per SIMD block of the CPU's blocked conv layouts (onnxruntime's NCHWc, oneDNN's nChw16c).

    A width off this block is padded up to it and costs reorders: on an AVX-512 Xeon, resnet18 with
    its 64-channel trunk cut to 56 ran at 1.05x the unpruned latency, and cut to 48 at 0.92x.
    """
    return 16 if "avx512f" in _cpuinfo("flags").split() else 8


def int8_dot_saturates() -> bool:
    """True on an x86 CPU without VNNI: its 8-bit dot products (VPMADDUBSW on AVX2 / AVX-512) add
    pairs of u8 x s8 products into int16 and saturate, so full-range int8 weights give wrong convs
    (bench/int8_saturation.py: a QDQ resnet20's logits at 0.79x the float ones on an AVX2 EPYC, 1.01x
    with 7-bit weights, which cannot overflow)."""
    flags = set(_cpuinfo("flags").split())
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return x86 and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def usable_cpus() -> int:
    """Cores this process may run on: its affinity mask (taskset, a container's cpuset), not the host's
    count. A run pinned to one core with two threads per session time-slices against itself."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity API (macOS)
        return os.cpu_count() or 1
