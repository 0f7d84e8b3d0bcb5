"""The Plan: the one artifact every stage shares (JSON, versioned; see DESIGN.md).

It lives on the ONNX side because surgery reads it and `graphs` must not import torch; the
toolchain uses the same class.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from graphs.errors import InputError

PLAN_VERSION = 1
KNOWN_KEYS = {"version", "model", "channels", "remove", "round_to", "provenance", "reinit", "notes"}


@dataclass
class Plan:
    channels: dict[str, dict] = field(default_factory=dict)  # group id -> {"keep": [...]} | {"count": n}
    remove: list[str] = field(default_factory=list)  # block ids
    round_to: int = 1
    model: dict = field(default_factory=dict)  # onnx_sha256, spec, input_shape
    provenance: dict = field(default_factory=dict)
    reinit: dict = field(default_factory=dict)  # filled in when applied: module -> new input width
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"version": PLAN_VERSION, "model": self.model, "channels": self.channels, "remove": self.remove,
                "round_to": self.round_to, "provenance": self.provenance, "reinit": self.reinit, "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict, source: str = "plan") -> "Plan":
        if not isinstance(data, dict):
            raise InputError(f"{source}: a plan is a JSON object")
        if data.get("version") != PLAN_VERSION:
            raise InputError(f"{source}: plan version {data.get('version')!r} is not supported (expected {PLAN_VERSION})")
        unknown = set(data) - KNOWN_KEYS
        if unknown:
            raise InputError(f"{source}: unknown plan key(s): {', '.join(sorted(unknown))}")
        channels = data.get("channels", {}) or {}
        if not isinstance(channels, dict):
            raise InputError(f"{source}: 'channels' must map group ids to {{'keep': [...]}} or {{'count': n}}")
        for gid, spec in channels.items():
            if not isinstance(spec, dict) or len(set(spec) & {"keep", "count"}) != 1 or set(spec) - {"keep", "count", "criterion"}:
                raise InputError(f"{source}: channels['{gid}'] must have exactly one of 'keep' or 'count'")
            if "count" in spec and (not isinstance(spec["count"], int) or isinstance(spec["count"], bool)):
                raise InputError(f"{source}: channels['{gid}'].count must be an integer")
            if "keep" in spec and (not isinstance(spec["keep"], list) or not all(isinstance(i, int) for i in spec["keep"])):
                raise InputError(f"{source}: channels['{gid}'].keep must be a list of channel indices")
        remove = data.get("remove", []) or []
        if not isinstance(remove, list) or not all(isinstance(b, str) for b in remove):
            raise InputError(f"{source}: 'remove' must be a list of block ids")
        round_to = data.get("round_to", 1) or 1
        if not isinstance(round_to, int) or round_to < 1:
            raise InputError(f"{source}: 'round_to' must be a positive integer")
        return cls(channels=dict(channels), remove=list(remove), round_to=round_to, model=data.get("model", {}) or {},
                   provenance=data.get("provenance", {}) or {}, reinit=data.get("reinit", {}) or {},
                   notes=data.get("notes", []) or [])


def load_plan(path: str | os.PathLike) -> Plan:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such plan file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    return Plan.from_dict(data, str(path))
