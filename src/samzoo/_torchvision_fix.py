"""Make ``import torchvision`` work when its compiled extension cannot load.

Why this exists: the only torchvision wheel on some indexes is a CUDA build. Next to a CPU torch
its ``_C`` extension fails to load, and torchvision's ``_meta_registrations`` then dies with
``RuntimeError: operator torchvision::nms does not exist`` at import time. segment-anything and
torch-em import torchvision, so samzoo would not import at all. The same error is common on
user machines whose torch and torchvision versions do not match.

What it does: *only* when torchvision is installed, not yet imported, and its extension fails to
load, it declares the two op schemas torchvision registers meta kernels for (``nms``, ``qnms``),
gives ``nms`` a plain-torch CPU kernel (greedy NMS, identical results to torchvision's), and
lets ``torchvision.ops.nms`` call it (SAM's automatic mask generator needs it).
On a healthy install the extension loads and this module changes nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_LIBRARY: "torch.library.Library | None" = None  # keeps the op definitions alive
STATUS = "not-checked"  # "healthy", "patched", "absent", "already-imported"


def _extension_loads(package_dir: Path) -> bool:
    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
        return True
    except (OSError, RuntimeError):
        return False


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision semantics: keep indices sorted by score)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for rank, idx in enumerate(order.tolist()):
        if suppressed[rank]:
            continue
        keep.append(idx)
        rest = order[rank + 1:]
        xx1 = torch.maximum(x1[idx], x1[rest])
        yy1 = torch.maximum(y1[idx], y1[rest])
        xx2 = torch.minimum(x2[idx], x2[rest])
        yy2 = torch.minimum(y2[idx], y2[rest])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[idx] + areas[rest] - inter)
        suppressed[rank + 1:] |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def ensure_torchvision_importable() -> str:
    """Apply the fix if (and only if) torchvision's extension is broken; return what was done."""
    global _LIBRARY, STATUS
    if "torchvision" in sys.modules:
        STATUS = "already-imported"
        return STATUS
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        STATUS = "absent"
        return STATUS
    if _extension_loads(Path(spec.origin).parent) or _op_exists("nms"):
        STATUS = "healthy"
        return STATUS
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    )
    lib.impl("nms", nms_reference, "CPU")
    _LIBRARY = lib
    import torchvision.extension  # now imports cleanly

    # torchvision.ops.nms asserts the extension loaded; the one op it needs is defined above.
    # Other compiled ops (roi_align, ...) stay missing and fail with torch's own "no such op".
    torchvision.extension._has_ops = lambda: True
    STATUS = "patched"
    return STATUS
