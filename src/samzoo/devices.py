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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_freed_memory_kept = False


def keep_freed_cpu_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 32 MB for reuse instead of returning them to
    the system; once per process, Linux/glibc only. Returns whether the setting is in force.

    Why: a ViT forward pass on the CPU allocates and frees activations of 4-32 MB per layer. By
    default glibc serves large blocks with fresh ``mmap``s and trims its heap, so every tile
    faults in hundreds of MB of new zeroed pages. Measured on a ViT-L Cellpose-SAM tile (1 thread):
    130,000-320,000 minor page faults and 0.3-0.7 s of system time per 10 s tile, ~1,400 faults
    and under 0.01 s with this setting. The cost: memory freed after inference stays with the
    process (its peak, which inference reached anyway) instead of going back to the system.
    PyTorch has no public CPU caching allocator to do this instead."""
    global _freed_memory_kept
    if _freed_memory_kept:
        return True
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    _freed_memory_kept = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    return _freed_memory_kept
