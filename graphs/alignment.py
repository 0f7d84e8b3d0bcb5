"""Which widths a channel group may take: multiples of the backend's channel block (`round_to`).

A group counts units; a unit is `multiplicity` channels (one channel in every group of a grouped conv,
two across a channel shuffle). One rule, used by the latency grid, the solvers, the anchors and the
surgery's rounding, so a width the solver picks is a width the table measured and the surgery keeps.
"""
from __future__ import annotations

import math


def unit_step(channels: int, multiplicity: int, round_to: int) -> int:
    """Kept units move in steps of this many: the kept channels (units x multiplicity) stay a
    multiple of round_to."""
    if round_to <= 1:
        return 1
    return round_to // math.gcd(round_to, max(1, multiplicity))


def _blocked_groups(channels: int, multiplicity: int, round_to: int) -> bool:
    """A grouped conv whose groups are whole channel blocks: the backend runs it on its blocked kernels."""
    return round_to > 1 and multiplicity > 1 and channels % round_to == 0


def aligned_widths(channels: int, multiplicity: int, round_to: int) -> list[int]:
    """Kept-unit counts below full width that the rule allows, narrowest first.

    In a grouped conv whose groups are whole channel blocks, a per-group width must divide the block
    (or be a multiple of it): regnet_y_800mf's 20-group convs at 12 of 16 channels per group ran at
    1.026x the unpruned latency, at 8 at 0.883x and at 4 at 0.712x (its 4- and 9-group convs at 12:
    1.043x and 1.045x; bench/results/grouped_alignment.txt). 12 falls off the blocked kernels.
    """
    if _blocked_groups(channels, multiplicity, round_to):
        return [k for k in range(1, channels) if (round_to % k == 0 or k % round_to == 0)
                and (k * multiplicity) % round_to == 0]
    step = unit_step(channels, multiplicity, round_to)
    return list(range(step, channels, step))


def round_count(count: int, channels: int, multiplicity: int, round_to: int) -> int:
    """Round a kept-unit count to the nearest allowed width (never to zero; full width when none fits)."""
    if round_to <= 1:
        return max(1, min(count, channels))
    if _blocked_groups(channels, multiplicity, round_to):
        allowed = aligned_widths(channels, multiplicity, round_to) + [channels]
        return min(allowed, key=lambda k: (abs(k - count), -k))  # a tie keeps more
    step = unit_step(channels, multiplicity, round_to)
    rounded = max(step, int(round(count / step)) * step)
    return min(rounded, channels) if channels >= step else channels
