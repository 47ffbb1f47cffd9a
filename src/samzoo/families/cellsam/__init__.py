"""CellSAM (Van Valen lab): CellFinder (Anchor DETR on a SAM ViT-B) finds cells, SAM draws them.

Public functions: ``load_cellsam`` / ``save_cellsam`` (strict checkpoints), ``build_cellsam``
(random init, any ``CellSAMConfig``), ``segment_image`` (the whole pipeline, uint32 labels),
``detect_boxes`` (CellFinder boxes as (x0, y0, x1, y1) prompts for any SAM model) and
``CellSAMParams`` (every threshold, tunable).
"""

from __future__ import annotations

from .checkpoint import expected_layout, load_cellsam, looks_like_cellsam, save_cellsam
from .config import PUBLISHED, TINY, CellSAMConfig
from .model import LICENCE_NON_COMMERCIAL, CellSAMMetadata, CellSAMModel
from .params import TUNING_GRID, CellSAMParams
from .prompts import detect_boxes
from .segment import segment_image


def build_cellsam(config: CellSAMConfig = PUBLISHED, *, with_model_cp: bool = True, seed: int | None = None) -> CellSAMModel:
    """A randomly initialised CellSAM (``seed`` makes it reproducible)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    return CellSAMModel(config, with_model_cp=with_model_cp).eval()


__all__ = [
    "PUBLISHED", "TINY", "TUNING_GRID", "LICENCE_NON_COMMERCIAL", "CellSAMConfig", "CellSAMMetadata",
    "CellSAMModel", "CellSAMParams", "build_cellsam", "detect_boxes", "expected_layout", "load_cellsam",
    "looks_like_cellsam", "save_cellsam", "segment_image",
]


def _family():
    from .. import FamilySpec
    from . import family as spec

    return FamilySpec(
        name="cellsam",
        title="CellSAM",
        summary="CellFinder (Anchor DETR on SAM ViT-B) detects cells, SAM draws one mask per box",
        licence="samzoo code MIT (architecture written from the CellSAM / Anchor DETR papers); the official "
                "CellSAM weights: " + LICENCE_NON_COMMERCIAL.split(": ", 1)[1],
        model_class=CellSAMModel,
        recognises=spec.recognises,
        load=spec.load,
        segment=spec.segment,
        params=CellSAMParams,
        param_grid=TUNING_GRID,
        model_params=spec.model_params,
        package=spec.package,
        segment_from_prompts=spec.segment_from_prompts,
        architectures=("cellsam",),
    )


FAMILY = _family()
