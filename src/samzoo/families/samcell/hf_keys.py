"""Key mapping between Hugging Face transformers' ``SamModel`` state dicts and segment-anything's ``Sam``.

SAMCell's released weights (``samcell-generalist.pt``, ``samcell-cyto.pt``) are state dicts of
transformers' ``SamModel``; samzoo runs the same network as segment-anything modules. The two
layouts differ only in names (the tensors are identical), so the mapping is a fixed list of
renames, checked both ways by the tests. transformers stores the random-Fourier positional
matrix twice (``shared_image_embedding`` and the tied ``prompt_encoder.shared_embedding``);
segment-anything once, so the duplicate is checked for equality and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ...errors import CheckpointError

HF_MARKER = "vision_encoder.patch_embed.projection.weight"
_PE_HF = "shared_image_embedding.positional_embedding"
_PE_HF_TIED = "prompt_encoder.shared_embedding.positional_embedding"
_PE_SA = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

# (transformers pattern, segment-anything replacement); applied to the part after the prefix.
_RULES: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^vision_encoder\.pos_embed$", "image_encoder.pos_embed"),
    (r"^vision_encoder\.layers\.(\d+)\.layer_norm([12])\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^vision_encoder\.layers\.(\d+)\.(attn|mlp)\.", r"image_encoder.blocks.\1.\2."),
    (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.point_embed\.(\d+)\.", r"prompt_encoder.point_embeddings.\1."),
    (r"^prompt_encoder\.(no_mask_embed|not_a_point_embed)\.", r"prompt_encoder.\1."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.", r"mask_decoder.transformer.layers.\1.norm\2."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_in\.", r"mask_decoder.\1.layers.0."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\.", r"mask_decoder.\1.layers.1."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_out\.", r"mask_decoder.\1.layers.2."),
    # Names both libraries share (attention projections, MLPs, tokens).
    (r"^mask_decoder\.", "mask_decoder."),
)

# The reverse direction: segment-anything name -> transformers name.
_REVERSE: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^image_encoder\.pos_embed$", "vision_encoder.pos_embed"),
    (r"^image_encoder\.blocks\.(\d+)\.norm([12])\.", r"vision_encoder.layers.\1.layer_norm\2."),
    (r"^image_encoder\.blocks\.(\d+)\.(attn|mlp)\.", r"vision_encoder.layers.\1.\2."),
    (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^prompt_encoder\.point_embeddings\.(\d+)\.", r"prompt_encoder.point_embed.\1."),
    (r"^prompt_encoder\.(no_mask_embed|not_a_point_embed)\.", r"prompt_encoder.\1."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.norm([1-4])\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\.", r"mask_decoder.\1.proj_in."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.1\.", r"mask_decoder.\1.layers.0."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.2\.", r"mask_decoder.\1.proj_out."),
    (r"^mask_decoder\.", "mask_decoder."),
)


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return None


def is_hf_sam_state(state: Mapping[str, object]) -> bool:
    """Whether ``state`` is a transformers ``SamModel`` state dict (optionally ``module.``-prefixed)."""
    return HF_MARKER in state or ("module." + HF_MARKER) in state


def hf_to_sam(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """transformers ``SamModel`` state dict -> segment-anything ``Sam`` state dict (same tensors)."""
    if state and all(str(k).startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        key = str(key)
        if key == _PE_HF_TIED:
            continue
        if key == _PE_HF:
            out[_PE_SA] = value
            continue
        new = _rename(key, _RULES)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise CheckpointError(f"{source}: keys outside transformers' SamModel layout: {', '.join(unknown[:5])}{more}")
    if _PE_HF not in state:
        if _PE_HF_TIED not in state:
            raise CheckpointError(f"{source}: the positional-encoding matrix ({_PE_HF}) is missing")
        out[_PE_SA] = state[_PE_HF_TIED]
    elif _PE_HF_TIED in state and not torch.equal(state[_PE_HF], state[_PE_HF_TIED]):
        raise CheckpointError(f"{source}: {_PE_HF} and its tied copy {_PE_HF_TIED} differ")
    return out


def sam_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """segment-anything ``Sam`` state dict -> transformers ``SamModel`` state dict (both PE copies)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == _PE_SA:
            out[_PE_HF] = value
            out[_PE_HF_TIED] = value
            continue
        new = _rename(key, _REVERSE)
        if new is None:
            raise CheckpointError(f"{key}: not a segment-anything Sam weight")
        out[new] = value
    return out
