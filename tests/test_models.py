"""Architectures: same layout as segment-anything, same outputs as its reference attention."""

import pytest
import torch
from segment_anything.build_sam import _build_sam
from segment_anything.modeling.image_encoder import Attention

from samzoo.families.microsam.checkpoint import infer_config
from samzoo.families.microsam.config import PRESETS, ModelConfig, preset
from samzoo.families.microsam.fast_attention import FastAttention
from samzoo.families.microsam.model import SamzooModel
from samzoo.families.microsam.sam import build_sam
from samzoo.errors import CheckpointError

SAM_ARGS = {
    "vit_b": (768, 12, 12, [2, 5, 8, 11]),
    "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
    "vit_h": (1280, 32, 16, [7, 15, 23, 31]),
}


def shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", list(SAM_ARGS))
def test_presets_have_segment_anything_layout(name):
    with torch.device("meta"):
        ours = build_sam(preset(name))
        theirs = _build_sam(*SAM_ARGS[name])
    assert shapes(ours) == shapes(theirs)
    assert infer_config(ours.state_dict()) == preset(name, ais_decoder=False, normalization="minmax")


@pytest.mark.parametrize("window,global_", [(4, False), (0, True)])
def test_fast_attention_matches_reference(window, global_):
    torch.manual_seed(0)
    size = (8, 8) if global_ else (window, window)
    ref = Attention(dim=48, num_heads=3, use_rel_pos=True, input_size=size)
    torch.nn.init.normal_(ref.rel_pos_h, std=0.5)
    torch.nn.init.normal_(ref.rel_pos_w, std=0.5)
    fast = Attention(dim=48, num_heads=3, use_rel_pos=True, input_size=size)
    fast.load_state_dict(ref.state_dict())
    fast.__class__ = FastAttention
    x = torch.randn(2, *size, 48)
    torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-5)


def test_small_model_embeds_and_decodes():
    model = SamzooModel(preset("test"))
    images = torch.rand(2, 3, 100, 70) * 255
    with torch.inference_mode():
        embedding, input_shape = model.embed(images)
        out = model.decode_ais(embedding, input_shape, (100, 70))
    assert embedding.shape == (2, 32, 8, 8)
    assert input_shape == (128, 90)
    assert out.shape == (2, 3, 100, 70)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_decoding_a_cached_embedding_equals_the_unetr_forward():
    model = SamzooModel(preset("test"))
    image = torch.rand(1, 3, 96, 128) * 255
    with torch.inference_mode():
        via_embedding = model(image)
        via_unetr = model.ais_decoder(image)
    torch.testing.assert_close(via_embedding, via_unetr)


def test_invalid_config_lists_every_problem():
    with pytest.raises(CheckpointError) as err:
        ModelConfig(embed_dim=100, num_heads=3, global_attn_indexes=(20,), normalization="zscore")
    message = str(err.value)
    assert "not divisible" in message and "global_attn_indexes" in message and "normalization" in message


def test_unknown_preset_and_unknown_config_field():
    with pytest.raises(CheckpointError, match="unknown architecture"):
        preset("vit_x")
    with pytest.raises(CheckpointError, match="unknown fields: colour"):
        ModelConfig.from_dict({**PRESETS["test"].to_dict(), "colour": 1})


@pytest.mark.parametrize("rows", [2, 3, 7, 32, 10_000])
def test_strip_decoder_matches_torch_em_decode(rows):
    """Inference runs the decoder's full-resolution head in row strips (memory): the maps agree
    with torch-em's one-piece ``UNETR.decode`` to float rounding, for strips that do and do not
    divide the height, and for one strip larger than the image."""
    from samzoo.families.microsam.ais_decoder import decode_full_size

    torch.manual_seed(3)
    model = SamzooModel(preset("test")).eval()
    for module in model.ais_decoder.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    size = model.config.img_size
    grid = size // model.config.patch_size
    embedding = torch.randn(2, model.sam.image_encoder.neck[-1].weight.shape[0], grid, grid)
    with torch.no_grad():
        expected = model.ais_decoder.decode((embedding, None, None), (size, size), (size, size))
        maps = decode_full_size(model.ais_decoder, embedding, rows)
        maps = model.ais_decoder.postprocess_masks(maps, (size, size), (size, size))
    assert maps.shape == expected.shape
    assert (maps - expected).abs().max() < 1e-5


def test_decode_ais_uses_strips_only_in_inference():
    """With autograd on (training) the decoder is torch-em's own graph; strips are for no_grad."""
    torch.manual_seed(4)
    model = SamzooModel(preset("test")).eval()
    size = model.config.img_size
    grid = size // model.config.patch_size
    embedding = torch.randn(1, model.sam.image_encoder.neck[-1].weight.shape[0], grid, grid, requires_grad=True)
    trained = model.decode_ais(embedding, (size, size), (size, size))
    trained.sum().backward()
    assert embedding.grad is not None and embedding.grad.abs().sum() > 0
    with torch.no_grad():
        inferred = model.decode_ais(embedding, (size, size), (size, size))
    assert (inferred - trained.detach()).abs().max() < 1e-5
