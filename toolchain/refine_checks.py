"""What `prune --budget` checks before it profiles anything (a typo should not cost a table build), and
the width floor each stage solves under."""
from __future__ import annotations

from typing import TYPE_CHECKING

from graphs.errors import InputError
from graphs.resolution import group_strides, is_selector
from toolchain.solve.budget import check_budget
from toolchain.solve.width_floor import WidthFloor, check_max_prune, check_max_prune_for

if TYPE_CHECKING:
    from toolchain.refine import BudgetRequest

MODES = ("filter", "layer", "joint")


def check_request(request: BudgetRequest) -> list[str]:
    """Every check that needs no model; returns the criteria that need data (a forward pass)."""
    if request.mode not in MODES:
        raise InputError(f"unknown mode {request.mode!r}: {', '.join(MODES)}")
    check_budget(request.budget)
    check_max_prune(request.max_prune)
    check_max_prune_for(request.max_prune_for)
    if (request.max_prune < 1.0 or request.max_prune_for) and request.mode == "layer":
        name = "--max-prune-ratio" + ("-for" if request.max_prune_for else "")
        raise InputError(f"{name} bounds how far a group narrows: it needs --mode filter or joint, not layer")
    if request.stages < 1:
        raise InputError(f"--stages must be >= 1, got {request.stages}")
    if request.confirm < 0:
        raise InputError(f"--confirm must be >= 0, got {request.confirm}")
    return _data_criteria(request)


def _data_criteria(request: BudgetRequest) -> list[str]:
    from toolchain.criteria.filters import get_criterion
    from toolchain.criteria.layers import known_layer_criteria

    def needs(name: str) -> bool:
        if name == "imprinting":
            return True
        if name.startswith("ensemble:"):
            return any(needs(part if ":" in part or part == "imprinting" else f"mean:{part}")
                       for part in name[len("ensemble:"):].split(","))
        if name.startswith("mean:"):
            return get_criterion(name[len("mean:"):]).needs_data
        raise InputError(f"unknown layer criterion {name!r}: known are {', '.join(known_layer_criteria())}")

    names = [(request.criterion, get_criterion(request.criterion).needs_data)]
    if request.mode == "layer":
        layer = request.layer_criterion or f"mean:{request.criterion}"
        names.append((layer, needs(layer)))
    for name, data in names:
        if data and request.loader is None:
            raise InputError(f"criterion {name} needs data: pass --data")
    return [name for name, data in names if data]


def check_onnx_only(request: BudgetRequest, data_criteria: list[str]) -> None:
    """Without a torch source the scores come from the graph's initializers: weight criteria only, one stage
    (fine-tuning between stages needs the torch module)."""
    if data_criteria:
        raise InputError(f"criterion {data_criteria[0]} needs a forward pass of the torch model; the ONNX has no torch "
                         "source: use a weight criterion (l1, l2, lamp, sp-lamp, random)")
    if request.stages > 1:
        raise InputError("--stages > 1 needs the torch source; the ONNX has none (export it with `compress export`)")


def make_width_floor(request: BudgetRequest, origin: dict[str, int], analysis, check_patterns: bool) -> WidthFloor:
    """The floor one stage solves under, counted from `origin` (the unpruned widths). The patterns are
    checked on the first stage's groups, where every one of them is still there."""
    selectors = any(is_selector(p) for p in request.max_prune_for)
    floor = WidthFloor(request.max_prune, origin, request.max_prune_for, group_strides(analysis) if selectors else {})
    unmatched = floor.unmatched(origin) if check_patterns else []
    if unmatched:
        raise InputError(f"--max-prune-ratio-for {unmatched[0]}: matches no channel group of this model "
                         "(`compress analyze` lists the group ids and their strides)")
    return floor
