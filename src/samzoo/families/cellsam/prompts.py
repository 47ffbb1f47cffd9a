"""CellFinder's boxes as prompts for samzoo's interactive mode with ANY SAM-family model.

The reference only feeds its boxes to its own SAM. ``detect_boxes`` returns them in image pixels as
(x0, y0, x1, y1), the format ``samzoo.segment_from_prompts(image, model=..., boxes=...)`` takes,
so a user can segment with (say) a μSAM model and then correct single cells with points.
"""

from __future__ import annotations

import numpy as np

from .model import CellSAMModel
from .params import CellSAMParams
from .segment import detect_boxes_01, prepare_image, to_image_pixels


def detect_boxes(model: CellSAMModel, image: np.ndarray, params: CellSAMParams | None = None, *,
                 return_scores: bool = False):
    """(N, 4) float64 boxes (x0, y0, x1, y1) in pixels of ``image``, best score first, clipped to the
    image; with ``return_scores`` also their (N,) detector scores."""
    params = params or model.params
    prepared = prepare_image(image, params)
    scores, boxes = detect_boxes_01(model, prepared, params)
    h, w = prepared.shape[:2]
    out = to_image_pixels(boxes, (h, w), model.config.img_size)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    if return_scores:
        return out, scores.detach().cpu().numpy().astype(np.float64)
    return out
