"""Packaged weights layout, plus the architecture classes of packages written by earlier samzoo versions.

Packages written now ship their architecture as a self-contained source file
(:mod:`samzoo.families.microsam.bioimageio_architecture`, no samzoo import). Packages written by samzoo 0.1
reference the classes below by import path (``samzoo.packaging.architectures``)
together with the model's :class:`~samzoo.families.microsam.config.ModelConfig` as keyword arguments. Importing
this module imports ``samzoo`` first, so the torchvision fix runs before segment-anything/torch-em
import torchvision (bioimageio.core imports the architecture in a fresh process).

All three classes hold a complete :class:`~samzoo.families.microsam.model.SamzooModel` under ``.model`` and load
the same weights file: a flat state dict ``{"sam.<key>": ..., "ais_decoder.<key>": ...}`` (the SAM
weights, plus the AIS decoder weights without the encoder it shares with SAM, i.e. micro-sam's
``model_state`` / ``decoder_state`` under two prefixes). One file serves every package kind.

* :class:`AisInstanceSegmentation` -- image -> instance labels. The seeded watershed runs inside
  ``forward`` (numpy/scipy), with the tuned AIS parameters as constructor arguments.
* :class:`AisNetwork` -- normalized image -> the AIS decoder's three maps (foreground, center
  distance, boundary distance). Pure torch, the part that also ships as TorchScript.
* :class:`InteractiveSegmentation` -- image + optional prompts / embeddings -> masks, scores,
  embeddings (micro-sam's tensor layout, so a consumer computes the embedding once and prompts often).
"""

from __future__ import annotations

import samzoo  # noqa: F401  (applies the torchvision fix before segment-anything is imported)

from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from ..errors import CheckpointError, InputError
from ..families.microsam.ais_decoder import decoder_state
from ..families.microsam.checkpoint import describe_mismatch
from ..families.microsam.config import ModelConfig
from ..families.microsam.model import SamzooModel, resized_shape

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


class _Packaged(nn.Module):
    """Common part: builds the SamzooModel from its config and loads the packaged weights."""

    def __init__(self, config: Mapping[str, Any], with_ais_decoder: bool):
        super().__init__()
        self.model = SamzooModel(ModelConfig.from_dict(dict(config)), with_ais_decoder=bool(with_ais_decoder))
        self.eval()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        # The packaged file is the flat {sam.*, ais_decoder.*} dict, not this wrapper's own
        # state_dict (which would list the shared encoder twice); mismatches always raise.
        load_packaged_state(self.model, state_dict)
        return _IncompatibleKeys([], [])


def _image_to_hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) numpy array, keeping the dtype the consumer passed."""
    array = image.detach().cpu().numpy()
    return np.moveaxis(array, 0, -1)


class AisInstanceSegmentation(_Packaged):
    """Automatic instance segmentation: ``(B, C, H, W)`` image -> ``(B, 1, H, W)`` uint32 labels.

    Per image this *is* ``samzoo.segment(image, model, mode="ais", ais_params=...)``: samzoo's
    normalization (``config['normalization']``, using the dtype the image arrives in), the encoder
    (tiled for very large images, as samzoo does), the AIS decoder, then the seeded watershed with
    ``ais_params`` (the checkpoint's tuned values unless overridden in rdf.yaml).
    """

    def __init__(self, config: Mapping[str, Any], ais_params: Optional[Mapping[str, Any]] = None):
        super().__init__(config, with_ais_decoder=True)
        from ..families.microsam.ais import AisParams

        self.ais_params = AisParams.from_dict(dict(ais_params or {}))
        self.model.ais_params = self.ais_params.to_dict()

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4:
            raise InputError(f"expected a (batch, channel, y, x) image, got shape {tuple(image.shape)}")
        from ..segmentation.api import segment

        labels = [segment(_image_to_hwc(item), self.model, mode="ais", ais_params=self.ais_params,
                          progress=False, is_volume=False) for item in image]
        return torch.from_numpy(np.stack(labels).astype(np.uint32)[:, None])


def normalized_input(model: SamzooModel, image_hwc: np.ndarray) -> torch.Tensor:
    """One image (H, W, C), any dtype -> the model's (1, 3, H, W) float32 0..255 input."""
    from ..segmentation.preprocess import prepare_images

    stack, _ = prepare_images(image_hwc, method=model.config.normalization, is_volume=False)
    return torch.from_numpy(np.ascontiguousarray(stack[0].transpose(2, 0, 1)))[None]


class AisNetwork(_Packaged):
    """The network part of AIS: ``(B, C, H, W)`` image already scaled to 0..255 (C = 1 or 3) ->
    ``(B, 3, H, W)`` sigmoid maps (foreground, center distance, boundary distance).

    The package declares the 0..255 scaling as BioImage.IO pre-processing; the watershed that
    turns the maps into labels is documented (and shipped as source) but not part of the network.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config, with_ais_decoder=True)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.model(x)


class InteractiveSegmentation(_Packaged):
    """Prompted segmentation with micro-sam's tensor layout (batch size 1).

    Inputs (positional, in this order; ``None`` for the ones not given):

    * ``image`` (1, C, H, W): raw intensities, normalized inside like ``samzoo.segment``;
    * ``box_prompts`` (1, N, 4): x_min, y_min, x_max, y_max in pixels of ``image``;
    * ``point_prompts`` (1, N, P, 2): x, y in pixels; ``point_labels`` (1, N, P): 1 foreground,
      0 background, -1 padding;
    * ``mask_prompts`` (1, N, 1, 4g, 4g): mask logits at SAM's low resolution (g = embedding grid);
    * ``embeddings`` (1, E, g, g): a previous call's embeddings output; the encoder is skipped.

    Outputs: ``masks`` (1, N, 1, H, W) uint8 (0/1), ``scores`` (1, N, 1) float32 predicted IoU and
    ``embeddings`` (1, E, g, g) float32. Without any prompt N = 0 (compute the embedding only).
    """

    def __init__(self, config: Mapping[str, Any], with_ais_decoder: bool = False):
        super().__init__(config, with_ais_decoder=with_ais_decoder)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, box_prompts: Optional[torch.Tensor] = None,
                point_prompts: Optional[torch.Tensor] = None, point_labels: Optional[torch.Tensor] = None,
                mask_prompts: Optional[torch.Tensor] = None, embeddings: Optional[torch.Tensor] = None):
        if image.ndim != 4 or image.shape[0] != 1:
            raise InputError(f"expected a (1, channel, y, x) image, got shape {tuple(image.shape)}")
        original = (int(image.shape[-2]), int(image.shape[-1]))
        input_shape = resized_shape(*original, self.model.config.img_size)
        if embeddings is None:
            x = normalized_input(self.model, _image_to_hwc(image[0]))
            embeddings, input_shape = self.model.embed(x)
        else:
            embeddings = embeddings.to(self.model.device, torch.float32)
        masks, scores = prompt_masks(self.model, embeddings, input_shape, original, box_prompts,
                                     point_prompts, point_labels, mask_prompts)
        return masks, scores, embeddings


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
