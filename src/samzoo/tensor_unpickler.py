"""Read the tensors of a checkpoint that also pickles Python objects, without running any of them.

torch-em's trainer (and with it micro-sam's) saves training checkpoints (``best.pt``,
``latest.pt``) with the model's constructor arguments pickled beside the weights -- whole
``nn.Module`` objects such as segment-anything's ``ImageEncoderViT``. ``torch.load(weights_only=True)``
refuses such files, and ``weights_only=False`` would run whatever callables the pickle names.

This loader takes a third way. Every global the pickle names is looked up in torch's own
weights-only allowlist (tensor rebuild functions, ``OrderedDict``, dtypes, ...); anything else is
replaced by an inert :class:`SkippedObject` subclass that only records the arguments it is given.
Tensors and plain containers come back exactly as ``torch.load`` would return them; foreign
objects come back as placeholders; no code named by the file is imported or run.

Written here because neither torch nor a maintained library offers "weights only, skip the
rest": torch's allowlist can only be extended (which would construct the listed classes), and
pickle scanners only report, they do not load.
"""

from __future__ import annotations

import os
import pickle
import types
from typing import Any


class SkippedObject:
    """Placeholder for a pickled object whose class samzoo does not load (see module docstring).

    It accepts every way pickle builds an object (call, ``__new__``, ``__setstate__``, list and
    dict item opcodes) and keeps the data, so nothing fails and nothing executes."""

    pickled_as = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("items", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("items", []).extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("mapping", {})[key] = value

    def __repr__(self) -> str:
        return f"<skipped {self.pickled_as}>"


def _allowed_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler as wo

    return dict(wo._get_allowed_globals())


def _checked_build(unpickler: Any) -> None:
    """BUILD (set an object's state) only where torch's weights-only loader allows it, plus on
    placeholders. A plain unpickler would ``setattr`` on anything -- e.g. on the allowlisted
    ``torch._utils._rebuild_tensor_v2`` function, changing its defaults for the whole process."""
    from collections import OrderedDict

    import torch

    state = unpickler.stack.pop()
    inst = unpickler.stack[-1]
    if isinstance(inst, SkippedObject):
        inst.__setstate__(state)
    elif type(inst) is torch.Tensor:
        inst.set_(*state)
    elif type(inst) is torch.nn.Parameter:
        inst.__setstate__(state)
    elif type(inst) is OrderedDict and isinstance(state, dict):
        inst.__dict__.update(state)
    else:
        raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__name__} (pickle BUILD); "
                                     "only tensors, OrderedDicts and skipped objects take state")


def read_tensors_only(path: str | os.PathLike) -> tuple[Any, list[str]]:
    """``torch.load`` of ``path`` with every non-allowlisted global replaced by a placeholder.

    Returns the loaded object and the sorted names of the globals that were replaced. Uses the
    pure-Python unpickler, whose opcode table can be changed: BUILD goes through
    :func:`_checked_build`."""
    import torch

    allowed = _allowed_globals()
    skipped: dict[str, type] = {}

    class TensorOnlyUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
        dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
        dispatch[pickle.BUILD[0]] = _checked_build

        def find_class(self, module: str, name: str) -> Any:
            key = f"{module}.{name}"
            if key in allowed:
                return allowed[key]
            if key not in skipped:
                skipped[key] = type(name, (SkippedObject,), {"pickled_as": key, "__module__": __name__})
            return skipped[key]

    def load(file: Any, **kwargs: Any) -> Any:  # torch's legacy (non-zip) format
        return TensorOnlyUnpickler(file, **kwargs).load()

    pickle_module = types.ModuleType("samzoo_tensor_only_pickle")
    pickle_module.Unpickler = TensorOnlyUnpickler  # type: ignore[attr-defined]
    pickle_module.load = load  # type: ignore[attr-defined]
    obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)
    return obj, sorted(skipped)
