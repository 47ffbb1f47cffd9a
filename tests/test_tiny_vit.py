"""MobileSAM's TinyViT encoder (vit_t): checkpoint layout, numerics, SAM / torch-em integration.

Fixtures in tests/data, both produced once from the public MobileSAM source (ChaoningZhang/MobileSAM,
mobile_sam/modeling/tiny_vit_sam.py, encoder arguments of build_sam_vit_t), built outside this
repository; none of its code is part of samzoo:
- mobile_sam_vit_t_encoder_keys.json: name, shape and dtype of every ``state_dict`` entry.
- mobile_sam_vit_t_reference.json: its outputs at 512 px for the weights and input that
  ``reference_weights`` / ``reference_input`` below define (plain arithmetic, no RNG).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from samzoo._torchvision_fix import ensure_torchvision_importable

ensure_torchvision_importable()

from segment_anything import SamPredictor  # noqa: E402
from torch_em.model import UNETR  # noqa: E402

from samzoo.errors import CheckpointError  # noqa: E402
from samzoo.families.microsam.config import preset  # noqa: E402
from samzoo.families.microsam.sam import build_sam  # noqa: E402
from samzoo.families.microsam.tiny_vit import (  # noqa: E402
    TINY_VIT_DEFAULTS,
    TinyViT,
    build_tiny_vit,
    infer_tiny_vit_settings,
    relative_offset_index,
    tiny_vit_settings,
)

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "mobile_sam_vit_t_encoder_keys.json").read_text())
SMALL = preset("vit_t", img_size=256)  # same weights layout, 16x16 embeddings: fast


def layout(state_dict) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state_dict.items()}


def manifest_layout(prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    return {prefix + e["name"]: (tuple(e["shape"]), e["dtype"]) for e in MANIFEST["keys"]}


def _uniform(n: int, seed: int) -> torch.Tensor:
    """n values in [-1, 1) from an integer hash of (index, seed): identical on every platform."""
    h = (torch.arange(n, dtype=torch.int64) * 2654435761 + seed * 40503 + 12345) % 2**32
    h = ((h ^ (h >> 15)) * 2246822519) % 2**32
    h = h ^ (h >> 13)
    return (h.double() / 2**31 - 1.0).float()


def reference_weights(entries) -> dict[str, torch.Tensor]:
    """Deterministic, non-trivial weights for every manifest entry (BN stats, biases included)."""
    out = {}
    for i, e in enumerate(entries):
        name, shape = e["name"], tuple(e["shape"])
        n = math.prod(shape)
        if e["dtype"] != "float32":  # num_batches_tracked
            out[name] = torch.full(shape, 7, dtype=torch.int64)
            continue
        u = _uniform(n, i).view(shape)
        if name.endswith("running_var"):
            value = 1.0 + 0.5 * u
        elif name.endswith(("bn.weight", "norm.weight", "norm_head.weight", "neck.1.weight", "neck.3.weight")):
            value = 1.0 + 0.2 * u
        elif name.endswith("attention_biases"):
            value = u
        elif len(shape) > 1:  # conv / linear weights: unit-ish gain
            value = u * math.sqrt(3.0 / math.prod(shape[1:]))
        else:  # biases, running means
            value = 0.1 * u
        out[name] = value.contiguous()
    return out


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    return reference_weights(MANIFEST["keys"])


def reference_input(size: int = 1024) -> torch.Tensor:
    c = torch.arange(3, dtype=torch.float64).view(3, 1, 1)
    y = torch.arange(size, dtype=torch.float64).view(1, size, 1)
    x = torch.arange(size, dtype=torch.float64).view(1, 1, size)
    img = 2.0 * torch.sin(0.043 * y + 0.9 * c) * torch.cos(0.029 * x - 0.4 * c) + 0.3 * torch.sin(0.5 * x * y / size)
    return img.float()[None]


def reference_sample(out: torch.Tensor) -> torch.Tensor:
    return out[0, ::16, ::8, ::8]


def test_defaults_are_mobile_sam_vit_t():
    settings = tiny_vit_settings(preset("vit_t"))
    assert settings == TINY_VIT_DEFAULTS
    assert {k: MANIFEST["constructor"][k] for k in settings} == settings
    assert settings["embed_dims"] == [64, 128, 160, 320]
    assert settings["depths"] == [2, 2, 6, 2]
    assert settings["num_heads"] == [2, 4, 5, 10]
    assert settings["window_sizes"] == [7, 7, 14, 7]
    assert (settings["mlp_ratio"], settings["mbconv_expand_ratio"], settings["local_conv_size"]) == (4.0, 4.0, 3)


def test_encoder_state_dict_equals_mobile_sam_manifest():
    encoder = build_tiny_vit(preset("vit_t"))
    assert len(MANIFEST["keys"]) == MANIFEST["count"] == 302
    assert layout(encoder.state_dict()) == manifest_layout()
    assert not any("attention_bias_idxs" in k for k in encoder.state_dict())


def test_full_vit_t_sam_has_mobile_sam_encoder_keys():
    sam = build_sam(preset("vit_t"))
    state = sam.state_dict()
    encoder_part = {k: v for k, v in state.items() if k.startswith("image_encoder.")}
    assert layout(encoder_part) == manifest_layout("image_encoder.")
    assert all(k.split(".")[0] in ("image_encoder", "prompt_encoder", "mask_decoder") for k in state)


@pytest.mark.parametrize("window", [1, 2, 5, 7, 14])
def test_bias_index_numbering_is_tinyvits(window):
    # TinyViT numbers each offset (|dy|, |dx|) by first appearance, scanning query then key cells.
    cells = [(r, c) for r in range(window) for c in range(window)]
    numbering: dict[tuple[int, int], int] = {}
    expected = [[numbering.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(numbering)) for b in cells]
                for a in cells]
    assert torch.equal(relative_offset_index(window), torch.tensor(expected))
    assert len(numbering) == window * window


def test_bias_index_is_a_non_persistent_buffer():
    encoder = build_tiny_vit(SMALL)
    attn = encoder.layers[2].blocks[0].attn
    assert "attention_bias_idxs" in dict(attn.named_buffers())
    assert "attention_bias_idxs" in attn._non_persistent_buffers_set
    assert tuple(attn.attention_biases.shape) == (5, 14 * 14)
    assert tuple(attn.attention_bias_idxs.shape) == (196, 196)


def test_forward_shape_at_1024():
    with torch.device("meta"):  # shapes only: a real 1024 px forward takes ~8 s on 2 CPU cores
        encoder = build_tiny_vit(preset("vit_t")).eval()
        assert encoder(torch.empty(2, 3, 1024, 1024)).shape == (2, 256, 64, 64)
    assert (encoder.img_size, encoder.in_chans, encoder.patch_size) == (1024, 3, 16)
    assert not hasattr(encoder, "embed_dim")  # torch-em's UNETR then reads the width from the neck


def test_forward_matches_mobile_sam_reference(reference_state):
    # The same comparison at 1024 px (the fixture's source, not repeated here for time) agreed to 5e-6.
    ref = json.loads((DATA / "mobile_sam_vit_t_reference.json").read_text())
    size = ref["img_size"]
    encoder = build_tiny_vit(preset("vit_t", img_size=size)).eval()
    encoder.load_state_dict(reference_state, strict=True)
    with torch.no_grad():
        out = encoder(reference_input(size))
    assert list(out.shape) == ref["shape"] == [1, 256, size // 16, size // 16]
    expected = torch.tensor(ref["sample"], dtype=torch.float32)
    torch.testing.assert_close(reference_sample(out), expected, atol=2e-4, rtol=1e-4)
    assert out.mean().item() == pytest.approx(ref["mean"], abs=1e-4)
    assert out.std().item() == pytest.approx(ref["std"], rel=1e-4)


def test_strict_round_trip(tmp_path, reference_state):
    encoder = build_tiny_vit(SMALL)
    encoder.load_state_dict(reference_state)  # non-trivial values everywhere
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    loaded = torch.load(tmp_path / "encoder.pt", weights_only=True)
    fresh = build_tiny_vit(SMALL)
    fresh.load_state_dict(loaded, strict=True)
    fresh_state = fresh.state_dict()
    assert fresh_state.keys() == reference_state.keys()
    for key, value in reference_state.items():
        assert torch.equal(fresh_state[key], value), key

    # the same tensors inside a full SAM checkpoint (mobile_sam.pt layout) load strictly
    sam = build_sam(SMALL)
    full = dict(sam.state_dict())
    full.update({"image_encoder." + k: v for k, v in loaded.items()})
    torch.save(full, tmp_path / "sam.pt")
    sam.load_state_dict(torch.load(tmp_path / "sam.pt", weights_only=True), strict=True)
    assert torch.equal(sam.image_encoder.layers[2].blocks[3].attn.attention_biases,
                       reference_state["layers.2.blocks.3.attn.attention_biases"])


def test_load_accepts_a_stored_bias_index_only_if_it_agrees():
    encoder = build_tiny_vit(SMALL)
    state = dict(encoder.state_dict())
    with_index = dict(state)
    for name, buffer in encoder.named_buffers():
        if name.endswith("attention_bias_idxs"):
            with_index[name] = buffer.clone()
    assert len(with_index) - len(state) == 10  # one per attention block: 2 + 6 + 2
    build_tiny_vit(SMALL).load_state_dict(with_index, strict=True)

    wrong = dict(with_index)
    wrong["layers.1.blocks.0.attn.attention_bias_idxs"] = relative_offset_index(7).flip(0)
    with pytest.raises(RuntimeError, match="attention_bias_idxs"):
        build_tiny_vit(SMALL).load_state_dict(wrong, strict=True)


def test_unetr_builds_and_runs_like_micro_sam():
    encoder = build_tiny_vit(SMALL)
    unetr = UNETR(encoder=encoder, out_channels=3, use_sam_stats=True, final_activation="Sigmoid",
                  use_skip_connection=False, resize_input=True).eval()
    assert unetr.embed_dim == 256  # taken from the neck: the encoder has no embed_dim attribute
    with torch.no_grad():
        out = unetr(torch.rand(1, 3, 100, 140) * 255)
    assert out.shape == (1, 3, 100, 140)
    assert 0.0 <= out.min().item() and out.max().item() <= 1.0

    # torch-em's own loading path: encoder weights taken from a full SAM checkpoint
    sam_state = build_sam(SMALL).state_dict()
    UNETR(encoder=build_tiny_vit(SMALL), out_channels=3, use_sam_stats=True, final_activation="Sigmoid",
          use_skip_connection=False, resize_input=True, encoder_checkpoint=sam_state)


def test_segment_anything_predictor_runs_on_vit_t():
    predictor = SamPredictor(build_sam(SMALL))
    image = (np.random.default_rng(0).random((120, 200, 3)) * 255).astype(np.uint8)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 256, 16, 16)
    masks, scores, logits = predictor.predict(point_coords=np.array([[50, 60]]), point_labels=np.array([1]))
    assert masks.shape == (3, 120, 200) and scores.shape == (3,) and logits.shape == (3, 64, 64)
    masks, _, _ = predictor.predict(box=np.array([10, 10, 90, 70]), multimask_output=False)
    assert masks.shape == (1, 120, 200)


def test_custom_tiny_vit_settings_build_and_run():
    config = preset("vit_t", img_size=128, patch_size=8, prompt_embed_dim=64, tiny_vit={
        "embed_dims": [16, 32, 48], "depths": [1, 1, 1], "num_heads": [1, 2, 3],
        "window_sizes": [4, 4, 4], "num_classes": 0,
    })
    config = type(config).from_dict(json.loads(json.dumps(config.to_dict())))  # survives a checkpoint
    encoder = build_tiny_vit(config).eval()
    assert isinstance(encoder, TinyViT) and encoder.patch_size == 8
    with torch.no_grad():
        assert encoder(torch.rand(2, 3, 128, 128)).shape == (2, 64, 16, 16)
    assert not any(k.startswith("head.") for k in encoder.state_dict())


def test_settings_are_inferred_from_checkpoint_shapes(reference_state):
    assert infer_tiny_vit_settings(reference_state, prefix="") == TINY_VIT_DEFAULTS
    custom = {"embed_dims": [16, 24, 32, 40], "depths": [1, 2, 3, 1], "num_heads": [2, 4, 4, 5],
              "window_sizes": [7, 3, 5, 2], "mlp_ratio": 2.0, "mbconv_expand_ratio": 3.0,
              "local_conv_size": 5, "num_classes": 10, "in_chans": 1}
    config = preset("vit_t", img_size=128, prompt_embed_dim=32, mask_decoder_heads=2, tiny_vit=custom)
    state = build_sam(config).state_dict()
    assert infer_tiny_vit_settings(state) == custom
    assert state["image_encoder.neck.0.weight"].shape[0] == 32
    with pytest.raises(CheckpointError, match="not a TinyViT"):
        infer_tiny_vit_settings(build_sam(preset("test")).state_dict())


@pytest.mark.parametrize("tiny_vit, message", [
    ({"embed_dim": [1, 2]}, "unknown tiny_vit settings embed_dim"),
    ({"depths": [2, 2, 6]}, "depths has 3 entries"),
    ({"num_heads": [2, 4, 7, 10]}, "not divisible by num_heads"),
    ({"local_conv_size": 4}, "local_conv_size"),
    ({"depths": 2}, "tiny_vit setting 'depths'"),
])
def test_invalid_settings_are_checkpoint_errors(tiny_vit, message):
    with pytest.raises(CheckpointError, match=message):
        build_tiny_vit(preset("vit_t", tiny_vit=tiny_vit))


def test_stride_must_match_patch_size():
    with pytest.raises(CheckpointError, match="downsamples by 16"):
        build_tiny_vit(preset("vit_t", patch_size=8))
