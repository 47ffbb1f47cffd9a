"""Type checks of dataclass configs against their own annotations: the one schema validator.

Why: configs arrive from YAML files, checkpoints and packages, where ``patch_size: "8"`` or
``iterations: abc`` are easy to write. Checked here, each becomes a one-line error naming the
field; unchecked, it was a TypeError or ZeroDivisionError deep inside model building or training.
Written by hand (a few lines) rather than pulling in pydantic models for two dataclasses whose
annotations already are the schema.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def type_ok(value: Any, hint: Any) -> bool:
    """Does ``value`` fit annotation ``hint``? A bool is no int; an int is a float."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis] or [Any]
        return isinstance(value, (list, tuple)) and all(type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def type_problems(config: Any) -> list[str]:
    """``"field must be T, got V"`` for every dataclass field whose value breaks its annotation."""
    hints = typing.get_type_hints(type(config))
    return [f"{f.name} must be {_type_name(hints[f.name])}, got {getattr(config, f.name)!r}"
            for f in dataclasses.fields(config) if not type_ok(getattr(config, f.name), hints[f.name])]


def summarize(problems: list[str], limit: int = 4) -> str:
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more
