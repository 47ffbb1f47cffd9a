"""CellSAM checkpoints: the published 1,041-key layout, strict reading, readable errors."""

from __future__ import annotations

import fractions
import math

import pytest
import torch

import samzoo  # noqa: F401  (torchvision fix first)
from samzoo.errors import CheckpointError
from samzoo.families.cellsam import TINY, build_cellsam, expected_layout, load_cellsam, save_cellsam
from samzoo.families.cellsam.checkpoint import model_from_state


def published_layout() -> dict[str, tuple[int, ...]]:
    """The published key list, derived from the description (families.md section 2.1), not from samzoo's
    model: SAM parts from segment-anything's own vit_b registry entry, CellFinder written out by hand."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        sam = sam_model_registry["vit_b"]()
    sam_keys = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    layout = {f"{p}.{k}": s for p in ("model", "model_cp") for k, s in sam_keys.items()}
    head = "cellfinder.decode_head."
    for k, s in sam_keys.items():
        if k.startswith("image_encoder.") and not k.startswith("image_encoder.neck."):
            layout[head + "backbone.body." + k[len("image_encoder."):]] = s
    layout[head + "input_proj.0.0.weight"] = (256, 768, 1, 1)
    layout[head + "input_proj.0.0.bias"] = (256,)
    layout[head + "input_proj.0.1.weight"] = (256,)
    layout[head + "input_proj.0.1.bias"] = (256,)
    t = head + "transformer."

    def linear(name, out, inp):
        layout[name + ".weight"] = (out, inp)
        layout[name + ".bias"] = (out,)

    def norm(name):
        layout[name + ".weight"] = (256,)
        layout[name + ".bias"] = (256,)

    def attention(name, n_proj):
        layout[name + ".in_proj_weight"] = (n_proj * 256, 256)
        layout[name + ".in_proj_bias"] = (n_proj * 256,)
        linear(name + ".out_proj", 256, 256)

    def ffn(name):
        linear(name + ".linear1", 1024, 256)
        linear(name + ".linear2", 256, 1024)
        norm(name + ".norm2")

    for i in range(6):
        attention(f"{t}encoder_layers.{i}.self_attn", 5)
        norm(f"{t}encoder_layers.{i}.norm1")
        ffn(f"{t}encoder_layers.{i}.ffn")
        attention(f"{t}decoder_layers.{i}.cross_attn", 5)
        norm(f"{t}decoder_layers.{i}.norm1")
        attention(f"{t}decoder_layers.{i}.self_attn", 3)
        norm(f"{t}decoder_layers.{i}.norm2")
        ffn(f"{t}decoder_layers.{i}.ffn")
        linear(f"{t}class_embed.{i}", 2, 256)
        for j, out in enumerate((256, 256, 4)):
            linear(f"{t}bbox_embed.{i}.layers.{j}", out, 256)
    layout[t + "pattern.weight"] = (1, 256)
    layout[t + "position.weight"] = (3500, 2)
    for name in ("adapt_pos2d", "adapt_pos1d"):
        linear(f"{t}{name}.0", 256, 256)
        linear(f"{t}{name}.2", 256, 256)
    return layout


def cheap_random_state(layout, seed=0):
    """Random values without paying for 290 M normal draws: a random block tiled per tensor, offset per key."""
    g = torch.Generator().manual_seed(seed)
    block = torch.randn(1 << 16, generator=g)
    state = {}
    for i, (k, shape) in enumerate(layout.items()):
        n = math.prod(shape)
        reps = -(-n // block.numel())
        state[k] = (block.repeat(reps)[:n] + 0.001 * i).reshape(shape).clone()
    return state


def test_published_layout_has_1041_keys_and_matches_samzoo():
    layout = published_layout()
    assert len(layout) == 1041
    assert sum(math.prod(s) for s in layout.values()) == 290_259_676
    assert expected_layout() == layout
    without_cp = {k: s for k, s in layout.items() if not k.startswith("model_cp.")}
    assert expected_layout(with_model_cp=False) == without_cp


@pytest.mark.slow
def test_full_size_random_state_dict_loads_strictly():
    layout = published_layout()
    state = cheap_random_state(layout)
    model = model_from_state(state)
    assert model.networks.uses_model_cp
    loaded = model.networks.state_dict()
    for key in ("model.image_encoder.pos_embed", "model_cp.mask_decoder.iou_token.weight",
                "cellfinder.decode_head.transformer.position.weight",
                "cellfinder.decode_head.transformer.decoder_layers.5.cross_attn.in_proj_weight"):
        assert torch.equal(loaded[key], state[key])
    # SAM's pixel statistics are not in the file but must be real tensors
    assert model.networks.model_cp.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    without_cp = model_from_state({k: v for k, v in state.items() if not k.startswith("model_cp.")})
    assert not without_cp.networks.uses_model_cp and without_cp.sam is without_cp.networks.model


def test_roundtrip_file_formats(tmp_path):
    model = build_cellsam(TINY, seed=0)
    path = save_cellsam(model, tmp_path / "tiny.pt")
    back = load_cellsam(path)
    assert back.config == TINY
    for (k, a), (k2, b) in zip(model.networks.state_dict().items(), back.networks.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    # the reference's own wrappers: bare dict and {"state_dict": ...} read through the published config path
    state = model.networks.state_dict()
    from samzoo.families.cellsam.checkpoint import unwrap

    for obj in (state, {"state_dict": state}):
        got, config, _ = unwrap(obj)
        assert set(got) == set(state)


def test_mismatches_are_one_line_errors_naming_keys(tmp_path):
    model = build_cellsam(TINY, seed=0)
    state = dict(model.networks.state_dict())
    cfg = {"samzoo_format": 1, "family": "cellsam", "config": TINY.to_dict()}

    def write(st):
        p = tmp_path / "bad.pt"
        torch.save({**cfg, "state_dict": st}, p)
        return p

    missing = {k: v for k, v in state.items() if k != "model.mask_decoder.iou_token.weight"}
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): model\.mask_decoder\.iou_token") as e:
        load_cellsam(write(missing))
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): extra\.weight"):
        load_cellsam(write({**state, "extra.weight": torch.zeros(1)}))
    shaped = {**state, "cellfinder.decode_head.transformer.position.weight": torch.zeros(7, 2)}
    with pytest.raises(CheckpointError, match=r"wrong shape\(s\): .*position\.weight \(file \(7, 2\), model \(64, 2\)\)"):
        load_cellsam(write(shaped))
    partial_cp = {k: v for k, v in state.items() if not k.startswith("model_cp.mask_decoder")}
    with pytest.raises(CheckpointError, match="missing key"):
        load_cellsam(write(partial_cp))
    # a file that pickles objects is refused by weights_only loading
    p = tmp_path / "obj.pt"
    torch.save({"state_dict": state, "thing": fractions.Fraction(1, 3)}, p)
    with pytest.raises(CheckpointError, match="safe loading"):
        load_cellsam(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_cellsam(tmp_path / "nope.pt")
