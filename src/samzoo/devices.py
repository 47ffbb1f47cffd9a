"""Where inference runs: ``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.

One parser for the CLI's ``--device`` and the API's ``device=``, so both fail the same way on a
device this machine lacks (a one-line error, not a CUDA traceback minutes later)."""

from __future__ import annotations

import torch

from .errors import InputError


def inference_device(name: str | torch.device | None = "auto") -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; explicit devices are checked."""
    if isinstance(name, torch.device):
        text = str(name)
    else:
        text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {text!r} requested but CUDA is not available here (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {text!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' requested but MPS is not available here")
    return device
