"""Where the refinement's next solver target goes (toolchain/refine.py): a secant or scaled step,
kept inside the bracket of a met and a missed target once there is one."""
from __future__ import annotations


def next_target(tried: list[tuple[float, float]], budget: float, target: float, floor: float = 0.0) -> float | None:
    """The solver target to try next, or None when nothing more can be gained.

    A secant step through the last two (target, measured) points when they rise together (as they
    must, bar noise); otherwise a step scaled by the measured miss. Steps are bounded to x0.5..x1.5 so
    one noisy measurement cannot throw the search to an extreme, and never go below `floor`, the
    smallest latency the solver predicts it can reach: resnet50 layer-only at 0.4 measured 0.42
    with a plan predicted at 0.36; the step to 0.34 was then refused, though removing every block
    (predicted 0.349) met the budget. A target already tried gains nothing.
    """
    measured = tried[-1][1]
    step = target * budget / measured
    if len(tried) >= 2:
        (t0, m0), (t1, m1) = tried[-2], tried[-1]
        if abs(t1 - t0) > 1e-6 and (m1 - m0) / (t1 - t0) > 0.05:
            step = t1 + (budget - m1) * (t1 - t0) / (m1 - m0)
    step = float(min(1.0, max(0.02, min(1.5 * target, max(0.5 * target, step)))))
    step = max(step, floor + 1e-4)
    bracket = _bracket(tried, budget)
    if bracket is not None and not bracket[0] < step < bracket[1]:
        # Once a met and a missed target enclose the budget, the answer lies between them: a secant
        # through two nearly level noisy points must not throw the search out (yolo11n at 640: met at
        # 0.600, missed at 0.622 and 0.639, and the secant stepped to 0.535, measured 0.488).
        step = sum(bracket) / 2
    if any(abs(step - t) < 1e-3 for t, _ in tried):
        return _split_bracket(tried, budget)
    return step


def _bracket(tried: list[tuple[float, float]], budget: float) -> tuple[float, float] | None:
    """(the loosest target that met the budget, the tightest looser one that missed), or None."""
    met = [t for t, m in tried if m <= budget]
    if not met:
        return None
    below = max(met)
    missed = [t for t, m in tried if m > budget and t > below]
    return (below, min(missed)) if missed else None


def _split_bracket(tried: list[tuple[float, float]], budget: float) -> float | None:
    """Halfway across the bracket (see _bracket), or None. A joint plan is discrete in its target: on
    resnet20, target 0.700 measured 0.705 and 0.695 jumped to 0.646, the secant pointed back at 0.700,
    and the run kept 0.646, pruned far more than asked; a target between the two may find the plan in
    between."""
    bracket = _bracket(tried, budget)
    if bracket is None:
        return None
    middle = sum(bracket) / 2
    return None if any(abs(middle - t) < 1e-3 for t, _ in tried) else middle
