"""μSAM's automatic-instance-segmentation decoder: torch-em's UNETR on the SAM image encoder.

The settings below are the ones micro-sam uses (3 sigmoid outputs, SAM input statistics, no skip
connections), so ``decoder_state`` dicts load in both projects unchanged. Without skip
connections the decoder only needs the image embedding, which lets samzoo run it from the same
cached embedding the prompt decoder uses.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig

AIS_CHANNELS = ("foreground", "center_distances", "boundary_distances")


def build_ais_decoder(image_encoder: nn.Module, config: ModelConfig) -> nn.Module:
    """A UNETR sharing ``image_encoder`` (its weights are not duplicated)."""
    from torch_em.model import UNETR

    return UNETR(
        img_size=config.img_size,
        backbone="sam",
        encoder=image_encoder,
        out_channels=len(AIS_CHANNELS),
        use_sam_stats=True,
        final_activation="Sigmoid",
        use_skip_connection=False,
        resize_input=True,
        initial_features=config.ais_initial_features,
    )


def decoder_state(unetr: nn.Module) -> dict[str, torch.Tensor]:
    """The decoder's own weights: the UNETR state without the shared ``encoder.*`` entries."""
    return {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder.")}


# Rows of full-resolution features alive at once in inference (``decode_full_size``): at ViT-B's
# 1024 px a 128-channel row is 0.5 MB, so a 32-row strip holds ~16 MB per feature map (32 rows
# measured as fast as one piece there, 64 and 128 slower).
FULL_RESOLUTION_ROWS = 32


def decode_embedding(unetr: nn.Module, embedding: torch.Tensor, input_shape: tuple[int, int],
                     original_shape: tuple[int, int]) -> torch.Tensor:
    """Decoder outputs (B, 3, *original_shape) from a precomputed image embedding.

    In inference (no autograd, eval mode) the full-resolution stage runs in row strips
    (``decode_full_size``): torch-em's ``decode`` holds several full-resolution feature maps at
    once, ~2 GB transient at ViT-B's 1024 px; in strips the peak is ~0.4 GB.
    """
    if getattr(unetr, "use_skip_connection", False) or torch.is_grad_enabled():
        return unetr.decode((embedding, None, None), tuple(input_shape), tuple(original_shape))
    maps = decode_full_size(unetr, embedding)
    return unetr.postprocess_masks(maps, tuple(input_shape), tuple(original_shape))


def decode_full_size(unetr: nn.Module, z12: torch.Tensor, rows: int | None = FULL_RESOLUTION_ROWS) -> torch.Tensor:
    """torch-em's UNETR decoder (no skip connections) up to its sigmoid, at its native
    resolution (16x the embedding grid), with the full-resolution head run ``rows`` output rows
    at a time (``rows=None``: in one piece, as tracing needs -- a traced strip loop would bake in
    one image size). Same layers and weights as ``UNETR.decode``; in strips the two
    InstanceNorm statistics are accumulated over all strips first, so outputs agree with
    ``decode`` to float rounding (~1e-6), not bitwise.
    """
    z9 = unetr.deconv1(z12)
    z6 = unetr.deconv2(z9)
    z3 = unetr.deconv3(z6)
    x = unetr.decoder(unetr.base(z12), encoder_inputs=[z9, z6, z3])
    del z9, z6
    if rows is None or unetr.training or _head_layers(unetr) is None:
        up = unetr.deconv_out(x)
        z0 = unetr.deconv4(z3)
        joined = torch.cat([up, z0], dim=1)
        del up, z0
        out = unetr.out_conv(unetr.decoder_head(joined))
        return unetr.final_activation(out) if unetr.final_activation is not None else out
    return _head_in_strips(unetr, x, z3, max(2, int(rows)))


def _head_layers(unetr: nn.Module) -> tuple[nn.Module, ...] | None:
    """torch-em's ``decoder_head`` as (norm1, conv1, act1, norm2, conv2, act2) when it has the
    layout the strip code knows (instance norms without running stats or affine parameters,
    'same' 3x3 convolutions); None otherwise (then the head runs in one piece)."""
    layers = tuple(getattr(getattr(unetr, "decoder_head", None), "block", ()))
    if len(layers) != 6:
        return None
    norms, convs = (layers[0], layers[3]), (layers[1], layers[4])
    if not all(isinstance(n, nn.InstanceNorm2d) and not n.affine and not n.track_running_stats for n in norms):
        return None
    if not all(isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1)
               for c in convs):
        return None
    return layers


def _upsampled_rows(module: nn.Module, t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Full-resolution rows [start, stop) of ``module(t)`` for a local module that doubles the
    resolution (torch-em's ``Upsampler2d`` / ``Deconv2DBlock``), computed from a half-resolution
    window 4 rows wider on each side: the bilinear upsampling and a 3x3 convolution corrupt at
    most 2 rows at an inner window edge."""
    half = t.shape[-2]
    low, high = max(0, start // 2 - 4), min(half, (stop + 1) // 2 + 4)
    return module(t[..., low:high, :])[..., start - 2 * low: stop - 2 * low, :]


def _normalize(t: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float) -> torch.Tensor:
    return ((t - mean) / torch.sqrt(var + eps)).to(t.dtype)


class _Moments:
    """Per-(batch, channel) mean and biased variance accumulated strip by strip in float64."""

    def __init__(self) -> None:
        self.total = self.squares = None
        self.count = 0

    def add(self, t: torch.Tensor) -> None:
        t64 = t.double()
        total, squares = t64.sum(dim=(2, 3)), (t64 * t64).sum(dim=(2, 3))
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += t.shape[2] * t.shape[3]

    def mean_var(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        var = (self.squares / self.count - mean * mean).clamp_min(0)
        return mean[..., None, None].to(dtype), var[..., None, None].to(dtype)


def _head_in_strips(unetr: nn.Module, x: torch.Tensor, z3: torch.Tensor, rows: int) -> torch.Tensor:
    """The full-resolution head in row strips, in three passes over full-resolution buffers of
    64 channels: (1) ``z0 = deconv4(z3)`` into a buffer, with the statistics of the joined
    features ``cat(deconv_out(x), z0)`` for the first instance norm; (2) norm1 -> conv1 -> act1
    into a second buffer, with its statistics for the second norm; (3) norm2 -> conv2 -> act2 ->
    out_conv -> activation. ``deconv_out`` (a 1x1 convolution) is cheap, so it runs twice
    instead of being kept."""
    norm1, conv1, act1, norm2, conv2, act2 = _head_layers(unetr)
    height = 2 * x.shape[-2]
    strips = [(s, min(s + rows, height)) for s in range(0, height, rows)]

    z0, first = None, _Moments()
    for start, stop in strips:
        part = _upsampled_rows(unetr.deconv4, z3, start, stop)
        if z0 is None:
            z0 = part.new_empty((*part.shape[:2], height, part.shape[-1]))
        z0[..., start:stop, :] = part
        first.add(torch.cat([_upsampled_rows(unetr.deconv_out, x, start, stop), part], dim=1))
    del z3
    mean1, var1 = first.mean_var(x.dtype)

    hidden, second = None, _Moments()
    for start, stop in strips:
        top, bottom = max(0, start - 1), min(height, stop + 1)
        joined = torch.cat([_upsampled_rows(unetr.deconv_out, x, top, bottom), z0[..., top:bottom, :]], dim=1)
        h = act1(conv1(_normalize(joined, mean1, var1, norm1.eps)))[..., start - top: stop - top, :]
        if hidden is None:
            hidden = h.new_empty((*h.shape[:2], height, h.shape[-1]))
        hidden[..., start:stop, :] = h
        second.add(h)
    del x, z0
    mean2, var2 = second.mean_var(hidden.dtype)

    out = None
    for start, stop in strips:
        top, bottom = max(0, start - 1), min(height, stop + 1)
        h = _normalize(hidden[..., top:bottom, :], mean2, var2, norm2.eps)
        y = unetr.out_conv(act2(conv2(h)))[..., start - top: stop - top, :]
        if unetr.final_activation is not None:
            y = unetr.final_activation(y)
        if out is None:
            out = y.new_empty((*y.shape[:2], height, y.shape[-1]))
        out[..., start:stop, :] = y
    return out
