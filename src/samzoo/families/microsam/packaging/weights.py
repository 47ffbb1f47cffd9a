"""The weights file every μSAM package ships, and the PyTorch side of the prompt path.

One file serves every package kind: a flat state dict ``{"sam.<key>": ..., "ais_decoder.<key>": ...}``
(the SAM weights, plus the AIS decoder weights without the encoder it shares with SAM, i.e.
micro-sam's ``model_state`` / ``decoder_state`` under two prefixes), loaded by the package's own
architecture file (:mod:`samzoo.families.microsam.bioimageio_architecture`) and by samzoo.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import torch

from ....errors import CheckpointError, InputError
from ..ais_decoder import decoder_state
from ..checkpoint import describe_mismatch
from ..model import SamzooModel

SAM_PREFIX = "sam."
DECODER_PREFIX = "ais_decoder."


def packaged_state(model: SamzooModel) -> dict[str, torch.Tensor]:
    """The flat weights dict every package ships (references to the live tensors, no copies)."""
    state = {SAM_PREFIX + k: v for k, v in model.sam.state_dict(keep_vars=False).items()}
    if model.ais_decoder is not None:
        state.update({DECODER_PREFIX + k: v for k, v in decoder_state(model.ais_decoder).items()})
    return state


def split_packaged_state(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict | None]:
    """``packaged_state`` -> (SAM state, decoder state or None); unknown prefixes are an error."""
    sam, dec, other = {}, {}, []
    for key, value in state.items():
        if key.startswith(SAM_PREFIX):
            sam[key[len(SAM_PREFIX):]] = value
        elif key.startswith(DECODER_PREFIX):
            dec[key[len(DECODER_PREFIX):]] = value
        else:
            other.append(key)
    if other:
        more = f" (+{len(other) - 5} more)" if len(other) > 5 else ""
        raise CheckpointError(
            f"packaged weights hold {len(other)} keys outside 'sam.*'/'ais_decoder.*': {', '.join(other[:5])}{more}"
        )
    return sam, (dec or None)


def load_packaged_state(model: SamzooModel, state: Mapping[str, torch.Tensor], what: str = "packaged weights") -> None:
    """Strictly load ``packaged_state`` into ``model``; a mismatch raises a readable CheckpointError."""
    sam_state, dec_state = split_packaged_state(state)
    problem = describe_mismatch(model.sam.state_dict(), sam_state, f"SAM part of {what}")
    if problem:
        raise CheckpointError(problem)
    if (model.ais_decoder is None) != (dec_state is None):
        raise CheckpointError(
            f"{what}: the architecture {'has' if model.ais_decoder is not None else 'has no'} AIS decoder, "
            f"the weights {'have' if dec_state is not None else 'have no'} AIS decoder weights"
        )
    if dec_state is not None:
        problem = describe_mismatch(decoder_state(model.ais_decoder), dec_state, f"AIS decoder part of {what}")
        if problem:
            raise CheckpointError(problem)
    model.sam.load_state_dict(sam_state, strict=True)
    if dec_state is not None:
        model.ais_decoder.load_state_dict(dec_state, strict=False)  # encoder.* is shared with SAM


def normalized_input(model: SamzooModel, image_hwc: np.ndarray) -> torch.Tensor:
    """One image (H, W, C), any dtype -> the model's (1, 3, H, W) float32 0..255 input."""
    from ....segmentation.preprocess import prepare_images

    stack, _ = prepare_images(image_hwc, method=model.config.normalization, is_volume=False)
    return torch.from_numpy(np.ascontiguousarray(stack[0].transpose(2, 0, 1)))[None]


@torch.no_grad()
def prompt_masks(model: SamzooModel, embeddings: torch.Tensor, input_shape: tuple[int, int],
                 original: tuple[int, int], box_prompts: Optional[torch.Tensor] = None,
                 point_prompts: Optional[torch.Tensor] = None, point_labels: Optional[torch.Tensor] = None,
                 mask_prompts: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's prompt encoder + mask decoder for N objects (micro-sam layout, see above)."""
    sam = model.sam
    device = embeddings.device
    height, width = original
    scale = torch.tensor([input_shape[1] / width, input_shape[0] / height], dtype=torch.float32, device=device)
    counts = {}
    boxes = points = masks_in = None
    if box_prompts is not None:
        boxes = box_prompts[0].to(device, torch.float32).reshape(-1, 2, 2) * scale
        boxes = boxes.reshape(-1, 4)
        counts["box_prompts"] = boxes.shape[0]
    if point_prompts is not None:
        if point_labels is None:
            raise InputError("point_prompts need point_labels")
        coords = point_prompts[0].to(device, torch.float32) * scale
        labels = point_labels[0].to(device, torch.int64)
        if labels.shape != coords.shape[:2]:
            raise InputError(f"point_labels {tuple(labels.shape)} do not fit point_prompts {tuple(coords.shape)}")
        points = (coords, labels)
        counts["point_prompts"] = coords.shape[0]
    elif point_labels is not None:
        raise InputError("point_labels given without point_prompts")
    if mask_prompts is not None:
        masks_in = mask_prompts[0].to(device, torch.float32)
        counts["mask_prompts"] = masks_in.shape[0]
    if len(set(counts.values())) > 1:
        raise InputError(f"prompts disagree on the number of objects: {counts}")
    n = next(iter(counts.values()), 0)
    if n == 0:
        return (torch.zeros((1, 0, 1, height, width), dtype=torch.uint8),
                torch.zeros((1, 0, 1), dtype=torch.float32))
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks_in)
    if sparse.shape[0] != n:  # mask-only prompts: the prompt encoder cannot know N
        sparse = sparse.expand(n, -1, -1)
    low_res, iou = sam.mask_decoder(
        image_embeddings=embeddings,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    logits = sam.postprocess_masks(low_res, tuple(input_shape), tuple(original))
    masks = (logits > sam.mask_threshold).to(torch.uint8)
    return masks[None].cpu(), iou[None].to(torch.float32).cpu()
