"""int8 dynamic quantisation of the ViT image encoder's linear layers: a fast CPU path.

Why: on CPUs without AVX-512 BF16 / AMX, bfloat16 is emulated and slower than float32, while
int8 matrix products (FBGEMM / oneDNN, AVX2 or VNNI) run on every x86 CPU. The encoder's
``qkv``, ``proj`` and MLP linears hold almost all of its multiply-adds; with dynamic
quantisation their weights are stored as int8 (per output channel) and each call quantises its
activations on the fly, so no calibration data is needed. Attention products, convolutions,
norms, the AIS decoder and the prompt decoders stay float32.

Library: ``torch.ao.quantization.quantize_dynamic``. torch marks ``torch.ao.quantization`` as
deprecated in favour of torchao, but torchao's int8 CPU path is not in this project's
dependencies and ``quantize_dynamic`` still ships and works in torch 2.13; the deprecation
warning is silenced here so that it does not reach users on every call.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ...errors import InputError
from .model import SamzooModel


def quantize_int8(model: SamzooModel) -> SamzooModel:
    """A copy of ``model`` whose image-encoder ``nn.Linear`` layers are int8 dynamically quantised.

    The original model is left unchanged. CPU only (quantised kernels do not run on CUDA).
    Labels agree with float32 at mSA >= 0.98 on the shipped model
    (``tests/test_quantization.py``); speed: ``benchmarks/bench_inference.py --precisions``.
    """
    if not isinstance(model, SamzooModel):
        raise InputError(f"int8 quantisation takes a μSAM model, got {type(model).__name__}")
    if model.device.type != "cpu":
        raise InputError(f"int8 inference runs on the CPU only; the model is on {model.device} "
                         "(use --device cpu, or --precision bfloat16 on a GPU)")
    if is_quantized(model):
        return model
    quantized = copy.deepcopy(model).eval()  # the AIS decoder's UNETR shares the copied encoder
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(quantized.sam.image_encoder, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    quantized.metadata = {**quantized.metadata, "precision": "int8"}
    return quantized


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of ``model`` is a dynamically quantised linear."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(m, DynamicLinear) for m in model.modules())
