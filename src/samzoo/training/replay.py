"""Replay: keep a fine-tuned model from forgetting what its parent knew.

Fine-tuning a generalist on one dataset (a specialist) improves that dataset and costs the others
(catastrophic forgetting). The cheap remedy that continual-learning work keeps finding effective
is *replay*: a fraction of every run's samples is drawn from the parent's own training data. The
trainer stamps each checkpoint with the config it was trained with (``metadata["training"]``), so
the parent's data sources are known without the user listing them again.

Sources of the parent that cannot be read here (a real-data split without ``SAMZOO_DATA_ROOT``,
a folder of another machine) are left out with a note; the synthetic generators always can.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import InputError, SamzooError


def recorded_training_data(metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The data sources a checkpoint was trained on, as its trainer recorded them (may be empty)."""
    config = ((metadata or {}).get("training") or {}).get("config") or {}
    data = config.get("data") or []
    return [dict(source) for source in data if isinstance(source, Mapping) and "kind" in source]


def mix_replay(data: Sequence[Mapping[str, Any]], parent_data: Sequence[Mapping[str, Any]], fraction: float,
               readable: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """``data`` with weight ``1 - fraction`` in all plus the readable ``parent_data`` sources with
    weight ``fraction`` in all (each group keeps its own relative weights).

    ``readable(source)`` says whether a parent source can be read here; unreadable ones are left
    out with a note on stderr, and none readable is an error (replay would silently be off)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"replay must be a fraction in [0, 1), got {fraction}")
    own = [dict(s) for s in data]
    if fraction == 0.0:
        return own
    if not parent_data:
        raise InputError("replay: the initial model records no training data (it was not trained by samzoo); "
                         "list its data under data: yourself")
    kept = []
    for source in parent_data:
        if readable(dict(source)):
            kept.append(dict(source))
        else:
            print(f"samzoo: replay leaves out the parent's source {_describe(source)}: it cannot be read here",
                  file=sys.stderr)
    if not kept:
        raise InputError("replay: none of the initial model's training data can be read here "
                         f"({', '.join(_describe(s) for s in parent_data)}); set SAMZOO_DATA_ROOT or turn replay off")
    own_total = sum(float(s.get("weight", 1.0)) for s in own) or 1.0
    kept_total = sum(float(s.get("weight", 1.0)) for s in kept) or 1.0
    mixed = [{**s, "weight": float(s.get("weight", 1.0)) / own_total * (1.0 - fraction)} for s in own]
    mixed += [{**s, "weight": float(s.get("weight", 1.0)) / kept_total * fraction, "replay": True} for s in kept]
    return mixed


def can_build(build: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], bool]:
    """``readable`` for ``mix_replay``: whether ``build(source)`` succeeds (samzoo errors mean no)."""
    def readable(source: dict[str, Any]) -> bool:
        try:
            build(source)
        except SamzooError:
            return False
        return True
    return readable


def _describe(source: Mapping[str, Any]) -> str:
    kind = source.get("kind", "?")
    detail = source.get("set") or source.get("images") or source.get("dataset") or ""
    return f"{kind} {detail}".strip()
