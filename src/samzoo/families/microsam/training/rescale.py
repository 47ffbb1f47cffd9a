"""Halve a ViT model's patch size: the same weights then see every image at twice the zoom.

Why: a SAM ViT with 16 px patches resolves small nuclei poorly at native resolution (μSAM's
models upscale a 512 px image to 1024 px, i.e. 8 px per token). ``halve_patch_size`` turns a
trained ``patch_size=p`` model into a ``p/2`` model with the same ``img_size``: a token of the new
model covers the same image content as a token of the old model on a 2x-upscaled image, so the
learned features carry over.

* patch embedding: the ``p x p`` kernel is sum-pooled 2x2 to ``p/2 x p/2`` (exact for a
  nearest-neighbour 2x upscaled input);
* absolute position embedding: bilinear resize of the grid (g -> 2g);
* relative positions of the global-attention blocks: the trained offsets ``-(g-1)..g-1`` are kept,
  longer offsets take the value of the longest trained one; windowed blocks are unchanged
  (windows are counted in tokens);
* everything else (neck, prompt encoder, mask decoder, AIS decoder) is resolution-independent.

A short finetune afterwards adapts the position terms (see the recipe of samzoo-lm-tiny).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ....errors import InputError
from ..model import SamzooModel


def _extend_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    old = table.shape[0]
    pad = (length - old) // 2
    return torch.cat([table[:1].expand(pad, -1), table, table[-1:].expand(pad, -1)], 0)


@torch.no_grad()
def halve_patch_size(model: SamzooModel) -> SamzooModel:
    config = model.config
    if config.encoder != "vit" or config.patch_size % 2:
        raise InputError("halve_patch_size needs a ViT encoder with an even patch size")
    new = SamzooModel(config.replace(patch_size=config.patch_size // 2), ais_params=model.ais_params,
                      metadata=dict(model.metadata))
    state = model.sam.state_dict()
    target = new.sam.state_dict()
    out = {}
    for key, value in state.items():
        want = target[key].shape
        if key == "image_encoder.patch_embed.proj.weight":
            value = F.avg_pool2d(value, 2) * 4  # 2x2 sum pooling
        elif key == "image_encoder.pos_embed":
            value = F.interpolate(value.permute(0, 3, 1, 2), size=want[1:3], mode="bilinear",
                                  align_corners=False).permute(0, 2, 3, 1)
        elif ".attn.rel_pos_" in key and value.shape != want:
            value = _extend_rel_pos(value, want[0])
        elif key.startswith("prompt_encoder.") and value.shape != want:
            raise InputError(f"unexpected shape change for {key}: {tuple(value.shape)} -> {tuple(want)}")
        out[key] = value
    new.sam.load_state_dict(out)
    if model.ais_decoder is not None:
        from ..ais_decoder import decoder_state

        new.ais_decoder.load_state_dict(decoder_state(model.ais_decoder), strict=False)
    meta = dict(new.metadata)
    meta["rescaled"] = {"from_patch_size": config.patch_size, "to_patch_size": config.patch_size // 2}
    new.metadata = meta
    return new.eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m samzoo.families.microsam.training.rescale IN.pt OUT.pt``: write the halved-patch model."""
    import argparse

    from ..checkpoint import load_checkpoint, save_checkpoint

    ap = argparse.ArgumentParser(prog="python -m samzoo.families.microsam.training.rescale")
    ap.add_argument("checkpoint")
    ap.add_argument("output")
    args = ap.parse_args(argv)
    save_checkpoint(halve_patch_size(load_checkpoint(args.checkpoint)), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    import samzoo  # noqa: F401  (torchvision fix)

    raise SystemExit(main())
