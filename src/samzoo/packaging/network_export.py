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

from ..families.microsam import bioimageio_architecture as arch
from ..families.microsam.model import SamzooModel
from .architectures import packaged_state

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
