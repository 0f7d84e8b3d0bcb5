"""The one way the project fills a registry (per-op channel rules, per-module-type width rules)."""
from __future__ import annotations

from typing import Callable


def registrar(table: dict) -> Callable:
    """A decorator factory for `table`: `@register("A", "B")` stores the function under each key."""
    def register_under(*keys: str):
        def register(fn):
            for key in keys:
                table[key] = fn
            return fn
        return register
    return register_under
