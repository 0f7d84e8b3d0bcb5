"""After sync: the torch module must run and compute what the pruned ONNX computes, or prune refuses.

A module that keeps a width in a Python attribute no rule updates (toolchain.widths) either fails in
its forward pass (a split or view of the old size) or silently computes something else; both are
caught here, before anything is written, and the refusal names the module type and its attributes.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from torch import nn

from graphs.errors import InputError
from toolchain.verify import verify_module
from toolchain.widths import WidthError, width_attributes

__all__ = ["check_synced"]


def check_synced(module: nn.Module, pruned: onnx.ModelProto, input_shape, changed: list[str]) -> None:
    """Raise WidthError unless `module` (synced) runs and matches `pruned` on a seeded input.
    `changed`: names of the parameters sync sliced (their owners' ancestors are the suspects)."""
    module = copy.deepcopy(module).eval()  # verify may recalibrate BatchNorm: never on the caller's module
    shape = (1, *input_shape[1:])
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    _forward_or_refuse(module, x)
    try:
        result = verify_module(module, pruned, input_shape)
    except Exception as exc:  # onnxruntime's Fail: the pruned graph itself does not run
        raise InputError(f"the pruned graph does not run: {type(exc).__name__}: {_first_line(exc)}") from None
    if not result.parity.ok:
        suspects = _suspects(module, changed)
        raise WidthError(f"after sync the torch module differs from the pruned graph (max abs diff "
                         f"{result.parity.max_diff:.3g} > {result.parity.tolerance:.3g})"
                         + (f"; widths kept in attributes no sync rule updates: {', '.join(suspects)}" if suspects else ""))


def _forward_or_refuse(module: nn.Module, x: torch.Tensor) -> None:
    stack: list[str] = []  # the modules whose forward is running: on an exception, the last one raised it

    def enter(name):
        return lambda m, args: stack.append(name)

    def leave(m, args, out):
        stack.pop()  # returns None: a forward hook's return value would replace the output

    handles = []
    for name, sub in module.named_modules():
        handles += [sub.register_forward_pre_hook(enter(name)), sub.register_forward_hook(leave)]
    try:
        with torch.no_grad():
            module(x)
    except Exception as exc:
        failing = module.get_submodule(stack[-1]) if stack else module
        attrs = width_attributes(failing)
        where = f"{type(failing).__name__} ({stack[-1] if stack else 'the model'})"
        raise WidthError(f"cannot sync the pruned widths into {where}"
                         + (f", which keeps widths in attributes {', '.join(attrs)}" if attrs else "")
                         + f": {type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        for h in handles:
            h.remove()


def _suspects(module: nn.Module, changed: list[str]) -> list[str]:
    owners = {name.rpartition(".")[0] for name in changed}
    ancestors = {".".join(o.split(".")[:k]) for o in owners for k in range(1, o.count(".") + 1)}
    found = []
    for name in sorted(ancestors):
        sub = module.get_submodule(name)
        if type(sub).__module__.startswith("torch.nn"):
            continue
        found += [f"{type(sub).__name__}.{a}" for a in width_attributes(sub)]
    return sorted(set(found))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
