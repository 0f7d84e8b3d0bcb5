"""How narrow each channel group may go: the width floor of `prune --max-prune-ratio` and
`--max-prune-ratio-for` (Torch-Pruning's max_pruning_ratio and pruning_ratio_dict)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from graphs.deps import Group
from graphs.errors import InputError
from graphs.resolution import is_selector, selects


def check_max_prune(max_prune: float) -> None:
    if not 0.0 < max_prune <= 1.0:
        raise InputError(f"--max-prune-ratio must be in (0, 1], got {max_prune}")


def check_max_prune_for(per_group: dict[str, float]) -> None:
    for pattern, ratio in per_group.items():
        if not pattern or not 0.0 <= ratio <= 1.0:
            raise InputError(f"--max-prune-ratio-for {pattern}={ratio}: needs a group pattern and a ratio in [0, 1]")


@dataclass(frozen=True)
class WidthFloor:
    """How narrow a group may go: at most `max_prune` of its units removed (Torch-Pruning's
    max_pruning_ratio), counted from `origin`, the units it had before any stage pruned it (a later
    stage's group is already narrower). 1.0, the default: down to one unit, as SP-LAMP allows."""

    max_prune: float = 1.0
    origin: dict[str, int] = field(default_factory=dict)
    # group id pattern (fnmatch), or a stride selector (`stride<=4`, graphs/resolution.py) -> the ratio for
    # the groups it matches instead of max_prune (Torch-Pruning's pruning_ratio_dict); 0 keeps a group
    # whole. Where several match, the smallest ratio holds.
    per_group: dict[str, float] = field(default_factory=dict)
    strides: dict[str, int] = field(default_factory=dict)  # group id -> output stride, for the selectors

    def __post_init__(self):
        check_max_prune(self.max_prune)
        check_max_prune_for(self.per_group)

    def matches(self, pattern: str, group_id: str) -> bool:
        if is_selector(pattern):
            return selects(pattern, self.strides.get(group_id))
        return fnmatchcase(group_id, pattern)

    def ratio_for(self, group: Group) -> float:
        matched = [r for pattern, r in self.per_group.items() if self.matches(pattern, group.id)]
        return min(matched) if matched else self.max_prune

    def unmatched(self, group_ids) -> list[str]:
        """The patterns that match none of `group_ids` (a typo, or another model's names or strides)."""
        return [p for p in self.per_group if not any(self.matches(p, gid) for gid in group_ids)]

    def min_kept(self, group: Group) -> int:
        """The fewest units `group` may keep (its full width when an earlier stage already went below)."""
        origin = self.origin.get(group.id, group.channels)
        return min(group.channels, max(1, math.ceil((1.0 - self.ratio_for(group)) * origin - 1e-9)))

    def note(self) -> dict:
        """The plan's provenance entries: none without a floor."""
        return ({"max_prune_ratio": self.max_prune} if self.max_prune < 1.0 else {}) | \
            ({"max_prune_ratio_for": dict(self.per_group)} if self.per_group else {})

    def reach_hint(self) -> str:
        """What a refusal adds when the floor, not the model, set the fastest plan."""
        hint = "" if self.max_prune >= 1.0 else (f" with every group keeping {1.0 - self.max_prune:.0%} of its width "
                                                 f"or more (--max-prune-ratio {self.max_prune:g}; a larger ratio "
                                                 "reaches further)")
        if self.per_group:
            hint += " with " + ", ".join(f"{p} keeping {1.0 - r:.0%}" for p, r in self.per_group.items()) + \
                " of their width or more (--max-prune-ratio-for)"
        return hint


NO_FLOOR = WidthFloor()
