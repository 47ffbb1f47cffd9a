"""The network parts of a packaged model as TorchScript and ONNX, built from the package's own
architecture file (:mod:`samzoo.families.microsam.bioimageio_architecture`), so every weight format of a
package is the same network.

Why fixed S x S shapes: SAM's image encoder adds an absolute position embedding of one grid size,
so it only takes its own input size S; the AIS decoder after it is convolutional but its output
size follows the encoder's grid. A consumer runs images of any size blockwise with S x S blocks
(the packages declare the halo), which is also how samzoo tiles large images.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .. import bioimageio_architecture as arch
from ..model import SamzooModel
from .weights import packaged_state

ONNX_OPSET = 17
"""ONNX opset of exported models: 17 has LayerNormalization and is run by onnxruntime >= 1.14
(bioimage.io's runtime has onnxruntime 1.20)."""


def architecture_model(model: SamzooModel, kind: type[arch.MicroSam], **kwargs) -> arch.MicroSam:
    """``kind`` (a class of the architecture file) with ``model``'s weights, loaded strictly."""
    built = kind(model.config.to_dict(), **kwargs)
    built.load_state_dict(packaged_state(model), strict=True)
    return built.eval()


class _Block(nn.Module):
    """Only the parts :class:`~samzoo.families.microsam.bioimageio_architecture.AisNetwork` runs, so the
    traced / exported files do not carry the (unused) prompt encoder and mask decoder."""

    def __init__(self, network: arch.AisNetwork):
        super().__init__()
        self.network = network
        self.image_encoder = network.sam.image_encoder
        self.ais_decoder = network.ais_decoder
        self.register_buffer("pixel_mean", network.sam.pixel_mean.clone())
        self.register_buffer("pixel_std", network.sam.pixel_std.clone())
        self.size = network.cfg.img_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.pixel_mean) / self.pixel_std
        maps = self.ais_decoder.full_size(self.image_encoder(x), rows=None)
        return torch.nn.functional.interpolate(maps, (self.size, self.size), mode="bilinear", align_corners=False)


def _lean(network: arch.AisNetwork) -> nn.Module:
    block = _Block(network)
    del block.network  # keep only the two parts (registered above) in the traced graph
    return block.eval()


@torch.no_grad()
def trace_block(network: arch.AisNetwork, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript of the AIS network on an S x S block (``example``: (1, C, S, S) 0..255)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are static by design
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(_lean(network), example, check_trace=False)


@torch.no_grad()
def export_block_onnx(network: arch.AisNetwork, example: torch.Tensor, path: Path) -> Path:
    """ONNX file of the AIS network on an S x S block, input ``image``, output ``decoder_maps``.

    The TorchScript-based exporter (``dynamo=False``) writes one self-contained file without
    needing onnxscript; the graph has static shapes (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer notes of the exporter
        torch.onnx.export(_lean(network), (example,), str(path), input_names=["image"],
                          output_names=["decoder_maps"], opset_version=ONNX_OPSET, dynamo=False,
                          do_constant_folding=True)
    return path


# --------------------------------------------------------------------------------------------
# interactive model: image encoder and prompt decoder (the split segment-anything's ONNX export
# makes for its decoder: embed once, prompt often)
# --------------------------------------------------------------------------------------------

ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("image_embeddings",)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


class ImageEncoderOnnx(nn.Module):
    """``image`` (1, 3, h, w) 0..255, resized so its long side is S (h, w <= S, any values up to S)
    -> ``image_embeddings`` (1, E, g, g). SAM's pixel normalisation and the zero padding to S x S
    run inside; the intensity normalisation and the (antialiased) resize stay with the consumer,
    because the exporter has no antialiased resize (``aten::_upsample_bilinear2d_aa``) and a
    percentile has no ONNX operator."""

    def __init__(self, network: arch.MicroSam):
        super().__init__()
        self.image_encoder = network.sam.image_encoder
        self.register_buffer("pixel_mean", network.sam.pixel_mean.clone())
        self.register_buffer("pixel_std", network.sam.pixel_std.clone())
        self.size = network.cfg.img_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.to(torch.float32) - self.pixel_mean) / self.pixel_std
        x = torch.nn.functional.pad(x, (0, self.size - x.shape[-1], 0, self.size - x.shape[-2]))
        return self.image_encoder(x)


def resized_size(orig_im_size: torch.Tensor, long_side: int) -> torch.Tensor:
    """(h, w) of the encoder input for an (H, W) image, as tensor arithmetic (traced into the ONNX
    graph): round(H * S / max(H, W)), as ``resized_shape`` of the architecture file."""
    scale = long_side / torch.max(orig_im_size)
    return torch.floor(orig_im_size * scale + 0.5).to(torch.int64)


class PromptDecoderOnnx(nn.Module):
    """SAM's prompt encoder + mask decoder for N objects, segment-anything's ONNX conventions:

    * ``image_embeddings`` (1, E, g, g) from the encoder;
    * ``point_coords`` (N, P, 2) x, y in pixels of the *original* image; ``point_labels`` (N, P):
      1 foreground, 0 background, 2 / 3 a box's top-left / bottom-right corner, -1 padding. Without a
      box, append one padding point (0, 0) with label -1 to every object (as SAM does);
    * ``mask_input`` (N, 1, 4g, 4g) low-resolution logits and ``has_mask_input`` (1,): 1 to use them;
    * ``orig_im_size`` (2,) float: H, W of the original image.

    Outputs: ``masks`` (N, 1, H, W) logits (> 0 = object), ``iou_predictions`` (N, 1),
    ``low_res_masks`` (N, 1, 4g, 4g) logits to feed back as ``mask_input``. Equals the package's
    ``InteractiveSegmentation`` (points, then the box corners) to float rounding.
    """

    def __init__(self, network: arch.MicroSam):
        super().__init__()
        self.prompt_encoder = network.sam.prompt_encoder
        self.mask_decoder = network.sam.mask_decoder
        self.size = network.cfg.img_size

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        emb = pe.pe_layer._encode((coords + 0.5) / self.size)
        labels = labels[..., None]
        emb = emb * (labels != -1).to(emb.dtype) + pe.not_a_point_embed.weight * (labels == -1).to(emb.dtype)
        for i, point_embedding in enumerate(pe.point_embeddings):
            emb = emb + point_embedding.weight * (labels == i).to(emb.dtype)
        return emb

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor, orig_im_size: torch.Tensor):
        pe = self.prompt_encoder
        resized = resized_size(orig_im_size, self.size)
        scale = (resized.to(torch.float32) / orig_im_size).flip(0)  # (x, y) factors
        sparse = self._embed_points(point_coords * scale, point_labels)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = pe.mask_downscaling(mask_input) * has + pe.no_mask_embed.weight.reshape(1, -1, 1, 1) * (1 - has)
        low_res, iou = self.mask_decoder(image_embeddings, pe.get_dense_pe(), sparse, dense, False)
        upscaled = torch.nn.functional.interpolate(low_res, (self.size, self.size), mode="bilinear",
                                                   align_corners=False)
        upscaled = upscaled[..., :resized[0], :resized[1]]
        original = orig_im_size.to(torch.int64)
        masks = torch.nn.functional.interpolate(upscaled, size=(original[0], original[1]), mode="bilinear",
                                                align_corners=False)
        return masks, iou, low_res


@torch.no_grad()
def export_interactive_onnx(network: arch.MicroSam, encoder_path: Path, decoder_path: Path) -> tuple[Path, Path]:
    """The interactive model's two ONNX files: image encoder (dynamic h, w up to S) and prompt
    decoder (dynamic objects N, points P and image size H, W)."""
    cfg = network.cfg
    size, grid = cfg.img_size, cfg.grid
    image = torch.rand(1, 3, size, (3 * size) // 4) * 255
    decoder_args = (
        torch.randn(1, cfg.prompt_embed_dim, grid, grid),
        torch.rand(2, 3, 2) * size,
        torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]),
        torch.randn(2, 1, 4 * grid, 4 * grid),
        torch.ones(1),
        torch.tensor([float(size + 17), float(size // 2 + 3)]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes: the sizes traced as tensors are the dynamic ones
        torch.onnx.export(ImageEncoderOnnx(network).eval(), (image,), str(encoder_path),
                          input_names=list(ENCODER_INPUTS), output_names=list(ENCODER_OUTPUTS),
                          dynamic_axes={"image": {2: "height", 3: "width"}}, opset_version=ONNX_OPSET,
                          dynamo=False, do_constant_folding=True)
        torch.onnx.export(PromptDecoderOnnx(network).eval(), decoder_args, str(decoder_path),
                          input_names=list(DECODER_INPUTS), output_names=list(DECODER_OUTPUTS),
                          dynamic_axes={"point_coords": {0: "objects", 1: "points"},
                                        "point_labels": {0: "objects", 1: "points"},
                                        "mask_input": {0: "objects"},
                                        "masks": {0: "objects", 2: "height", 3: "width"},
                                        "iou_predictions": {0: "objects"}, "low_res_masks": {0: "objects"}},
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)
    return encoder_path, decoder_path


ENCODER_ONNX_NAME = "interactive_image_encoder.onnx"
DECODER_ONNX_NAME = "interactive_prompt_decoder.onnx"


def interactive_onnx_files(model: SamzooModel, folder: Path) -> dict[str, dict]:
    """Export the interactive model's encoder and prompt decoder into ``folder``; returns the
    package's description of them (``config.samzoo.onnx``): file, opset and each tensor's layout."""
    network = arch.MicroSam(model.config.to_dict(), with_ais_decoder=False)
    sam_only = {k: v for k, v in packaged_state(model).items() if k.startswith("sam.")}
    network.load_state_dict(sam_only, strict=True)
    encoder, decoder = export_interactive_onnx(network.eval(), folder / ENCODER_ONNX_NAME, folder / DECODER_ONNX_NAME)
    s, g, e = network.cfg.img_size, network.cfg.grid, network.cfg.prompt_embed_dim
    return {
        "image_encoder": {
            "source": encoder, "opset_version": ONNX_OPSET,
            "inputs": {"image": f"(1, 3, h, w) float32 0..255: the image normalised to 0..255 (as the package's "
                                f"model does) and resized (bilinear, antialiased) so that its long side is {s}"},
            "outputs": {"image_embeddings": f"(1, {e}, {g}, {g}) float32"},
        },
        "prompt_decoder": {
            "source": decoder, "opset_version": ONNX_OPSET,
            "inputs": {
                "image_embeddings": f"(1, {e}, {g}, {g}) float32, the encoder's output",
                "point_coords": "(objects, points, 2) float32: x, y in pixels of the original image",
                "point_labels": "(objects, points) float32: 1 foreground, 0 background, 2 / 3 box top-left / "
                                "bottom-right corner, -1 padding (add one (0, 0) padding point when there is no box)",
                "mask_input": f"(objects, 1, {4 * g}, {4 * g}) float32 low-resolution mask logits",
                "has_mask_input": "(1,) float32: 1 to use mask_input, 0 to ignore it",
                "orig_im_size": "(2,) float32: height, width of the original image",
            },
            "outputs": {"masks": "(objects, 1, height, width) float32 logits, > 0 = object",
                        "iou_predictions": "(objects, 1) float32 predicted IoU",
                        "low_res_masks": f"(objects, 1, {4 * g}, {4 * g}) float32 logits (the next mask_input)"},
        },
    }
