"""SAMCell family: key mapping of the released layout, equality with the authors' pipeline on the
same random weights, input handling, thresholds stored in checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import samzoo
from samzoo.errors import CheckpointError, InputError
from samzoo.families import detect_family, family_of, get_family

transformers = pytest.importorskip("transformers")

SIZE = 256  # input side of the small test network (SAMCell's real one is 1024)


def small_hf_model(seed: int = 0, size: int = SIZE):
    """transformers SamModel with a small image encoder; weights random but far from the tiny
    default init, so outputs vary across the image."""
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(image_size=size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           global_attn_indexes=[1], mlp_dim=256, window_size=4),
        prompt_encoder_config=dict(image_size=size, image_embedding_size=size // 16),
    )
    model = SamModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.05)
    return model


def textured_image(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape), 3)
    return np.round((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def hf_model():
    return small_hf_model()


@pytest.fixture(scope="module")
def released_style_file(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("samcell") / "samcell-small.pt"
    torch.save(hf_model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(released_style_file):
    return samzoo.load_model(released_style_file)


@pytest.mark.slow
def test_released_layout_maps_exactly_to_segment_anything():
    """A random SamModel(SamConfig()) has exactly the released files' keys and shapes (SAM ViT-B)."""
    from transformers import SamConfig, SamModel

    from samzoo.families.samcell.checkpoint import load_from_state
    from samzoo.families.samcell.hf_keys import hf_to_sam, sam_to_hf

    torch.manual_seed(0)
    hf_state = SamModel(SamConfig()).state_dict()
    # 315 tensors, 375 MB in float32, as the released samcell-generalist.pt (both PE copies counted)
    assert len(hf_state) == 315 and sum(v.numel() for v in hf_state.values()) == 93_735_984
    assert detect_family(hf_state).name == "samcell"
    sam_state = hf_to_sam(hf_state)
    model = load_from_state("released.pt", hf_state)
    assert model.config.name == "vit_b" and model.config.img_size == 1024
    own = model.sam.state_dict()
    assert set(own) == set(sam_state)
    assert all(torch.equal(own[k], sam_state[k]) for k in own)
    back = sam_to_hf(sam_state)
    assert set(back) == set(hf_state) and all(torch.equal(back[k], hf_state[k]) for k in back)


def test_small_file_formats_load_and_agree(hf_model, released_style_file, model, tmp_path):
    from safetensors.torch import save_file

    torch.save(hf_model.state_dict(), tmp_path / "w.bin")
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()
             if k != "prompt_encoder.shared_embedding.positional_embedding"}  # safetensors refuses shared tensors
    save_file(state, str(tmp_path / "w.safetensors"))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
        for name in ("w.bin", "w.safetensors"):
            other = samzoo.load_model(tmp_path / name)
            assert family_of(other).name == "samcell"
            assert torch.equal(other(x), expected)
        reference = torch.sigmoid(hf_model(pixel_values=x, multimask_output=True)["pred_masks"][:, 0, :1])
    assert float((reference - expected).abs().max()) < 1e-4


def test_bad_hf_files_fail_with_one_line(hf_model, tmp_path):
    state = dict(hf_model.state_dict())
    state["vision_encoder.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="outside transformers' SamModel layout"):
        samzoo.load_model(tmp_path / "extra.pt")
    state = dict(hf_model.state_dict())
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="1 missing: mask_decoder.iou_token.weight"):
        samzoo.load_model(tmp_path / "missing.pt")


def _reference_pipeline(hf_model):
    """samcell 1.2.0's pipeline on ``hf_model``, built offline (it fetches facebook/sam-vit-base's
    processor config from the Hub otherwise): the same SamProcessor, sized to the small network."""
    pipeline = pytest.importorskip("samcell.pipeline")
    from samcell.model import FinetunedSAM
    from transformers import SamImageProcessor, SamProcessor

    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": SIZE}, pad_size={"height": SIZE, "width": SIZE}))
    wrapper = FinetunedSAM.__new__(FinetunedSAM)  # its __init__ downloads facebook/sam-vit-base
    wrapper.model = hf_model
    original = pipeline.SamProcessor.from_pretrained
    pipeline.SamProcessor.from_pretrained = lambda *args, **kwargs: processor
    try:
        return pipeline.SlidingWindowPipeline(wrapper, "cpu")
    finally:
        pipeline.SamProcessor.from_pretrained = original


def _reference_weights(shape):
    """Where the authors' blending weights are usable (> 1e-4): their fill of the other pixels
    (outer row/column, a few corner pixels) indexes the wrong pixel, which samzoo fixes."""
    from samzoo.families.samcell import tiling

    size, _, windows = tiling.crop_layout(shape)
    crops = [np.ones((size, size), np.float32)] * len(windows)
    weight = np.zeros(shape, np.float32)
    mask = tiling.blending_mask(size, tiling.OVERLAP)
    for win in windows:
        weight[win.y:win.y + win.height, win.x:win.x + win.width] += mask[:win.height, :win.width]
    return weight > 0.0001


@pytest.mark.parametrize("shape,seed", [((256, 256), 1), ((300, 420), 2), ((150, 120), 3)])
def test_equal_to_reference_pipeline(hf_model, model, shape, seed):
    from skimage.segmentation import relabel_sequential

    from samzoo.families.samcell.segment import distance_map

    reference = _reference_pipeline(hf_model)
    image = textured_image(shape, seed)
    reference_map = reference.predict_on_full_img(image.copy())
    ours = distance_map(image, model)
    usable = _reference_weights(shape)
    assert usable.mean() > 0.98
    assert float(np.abs(ours - reference_map)[usable].max()) < 1e-4
    # Random weights give a map of little contrast: thresholds at its quantiles make many cells.
    peak, fill = (float(np.quantile(ours, q)) for q in (0.9, 0.3))
    labels = samzoo.segment(image, model, progress=False, params={"peak_threshold": peak, "fill_threshold": fill})
    reference_labels = reference.cells_from_dist_map(ours, peak, fill)
    assert labels.max() >= 5
    assert np.array_equal(labels, relabel_sequential(reference_labels)[0])


def test_inputs_the_reference_mishandles(model):
    image = textured_image((128, 160), 5)
    expected = samzoo.segment(image, model, progress=False)
    as16 = image.astype(np.uint16) * 257  # 16-bit data: the authors' uint8 cast wraps it
    assert np.array_equal(samzoo.segment(as16, model, progress=False), expected)
    assert np.array_equal(samzoo.segment(image.astype(np.float32) / 255.0, model, progress=False), expected)
    rgb = np.repeat(image[..., None], 3, axis=-1)
    assert np.array_equal(samzoo.segment(rgb, model, progress=False), expected)
    two = np.stack([image, np.zeros_like(image)], axis=-1)
    assert np.array_equal(samzoo.segment(two, model, progress=False), expected)
    bad = image.astype(np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        samzoo.segment(bad, model, progress=False)
    with pytest.raises(InputError, match="tile"):
        samzoo.segment(image, model, progress=False, tile_shape=256)
    with pytest.raises(InputError, match="peak_threshold"):
        samzoo.segment(image, model, progress=False, params={"peak_threshold": 1.5})


def test_thresholds_travel_in_the_checkpoint(model, tmp_path):
    from samzoo.families.samcell.checkpoint import save_checkpoint

    image = textured_image((128, 128), 7)
    from samzoo.families.samcell.segment import distance_map

    tuned = {k: float(np.quantile(distance_map(image, model), q)) for k, q in (("peak_threshold", 0.9),
                                                                                ("fill_threshold", 0.3))}
    default = samzoo.segment(image, model, progress=False)
    loose = samzoo.segment(image, model, progress=False, params=tuned)
    assert not np.array_equal(default, loose)
    model.params = tuned
    try:
        path = save_checkpoint(model, tmp_path / "tuned.pt")
    finally:
        model.params = {}
    loaded = samzoo.load_model(path)
    assert family_of(loaded).name == "samcell" and get_family("samcell").model_params(loaded) == tuned
    assert np.array_equal(samzoo.segment(image, loaded, progress=False), loose)
    assert detect_family(torch.load(path, weights_only=True)).name == "samcell"


def test_registry_entries_and_trust_on_first_use(hf_model, tmp_path, monkeypatch):
    """The shipped entries say why they have no hash; such a file served over HTTP downloads with a
    warning naming its sha256, is recorded, reused offline, and loads as a SAMCell model."""
    import hashlib
    import io

    import yaml
    from _hub_servers import FileServer, hub_env, write_registry  # noqa: F401

    from samzoo.hub import fetch_files
    from samzoo.registry import load_registry

    shipped = load_registry(None, offline=True)
    for model_id in ("samcell-generalist", "samcell-cyto"):
        entry = shipped.get(model_id)
        assert entry.family == "samcell" and entry.licence.startswith("MIT")
        checkpoint = entry.file("checkpoint")
        assert checkpoint.hash is None and "no hash published" in checkpoint.unhashed
        assert checkpoint.url.startswith("https://github.com/saahilsanganeriya/SAMCell/releases/download/v1/")
    assert shipped.get("vit_b_lm").family == "microsam"

    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(tmp_path / "cache"))
    buffer = io.BytesIO()
    torch.save(hf_model.state_dict(), buffer)
    data = buffer.getvalue()
    server = FileServer().start()
    try:
        url = server.add("/v1/samcell-small.pt", data)
        reg = write_registry(tmp_path / "reg.yaml", [{
            "id": "samcell-small", "architecture": "vit_b", "modality": "lm", "family": "samcell",
            "files": [{"role": "checkpoint", "url": url, "unhashed": "none published"}]}])
        with pytest.warns(UserWarning, match="sha256:" + hashlib.sha256(data).hexdigest()):
            files = fetch_files("samcell-small", registry=reg, progress=False)
        assert fetch_files("samcell-small", registry=reg, offline=True) == files
        assert server.hits("/v1/samcell-small.pt") == 1
    finally:
        server.stop()
    assert family_of(samzoo.load_model(files["checkpoint"])).name == "samcell"
    bad = yaml.safe_load(reg.read_text())
    del bad["models"][0]["files"][0]["unhashed"]
    write_registry(tmp_path / "bad.yaml", bad["models"])
    with pytest.raises(Exception, match="unhashed"):
        load_registry(str(tmp_path / "bad.yaml"), offline=True)


def test_tune_and_evaluate_cli(model, released_style_file, tmp_path, capsys):
    """`samzoo tune` finds thresholds that reproduce reference labels, stores them in the SAMCell
    checkpoint, and `samzoo evaluate` scores the tuned model (mSA 1) above the untuned one."""
    import tifffile

    from samzoo import cli
    from samzoo.families.samcell.segment import distance_map

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    wanted = {}
    for i in range(2):
        image = textured_image((128, 128), 20 + i)
        distance = distance_map(image, model)
        wanted = {"peak_threshold": round(float(np.quantile(distance, 0.9)), 4),
                  "fill_threshold": round(float(np.quantile(distance, 0.3)), 4)} if i == 0 else wanted
        tifffile.imwrite(tmp_path / "images" / f"{i}.tif", image)
        tifffile.imwrite(tmp_path / "labels" / f"{i}.tif", samzoo.segment(image, model, progress=False, params=wanted))
    tuned = tmp_path / "tuned.pt"
    grid = [f"peak_threshold=0.47,{wanted['peak_threshold']}", f"fill_threshold=0.09,{wanted['fill_threshold']}"]
    assert cli.main(["tune", str(released_style_file), str(tmp_path / "images"), str(tmp_path / "labels"),
                     "-o", str(tuned), "-q", "--grid", *grid]) == 0
    assert "SAMCell: best mSA 1.0000" in capsys.readouterr().out
    assert samzoo.load_model(tuned).params == wanted
    assert cli.main(["evaluate", str(tuned), str(tmp_path / "images"), str(tmp_path / "labels"), "-q"]) == 0
    tuned_out = capsys.readouterr().out
    assert cli.main(["evaluate", str(released_style_file), str(tmp_path / "images"), str(tmp_path / "labels"),
                     "-q"]) == 0
    untuned_out = capsys.readouterr().out
    assert "msa" in tuned_out.lower() and "1.000" in tuned_out and tuned_out != untuned_out
    assert cli.main(["evaluate", str(tuned), str(tmp_path / "images"), str(tmp_path / "labels"),
                     "--mode", "amg", "-q"]) == 2
    assert "SAMCell models have no mode 'amg'" in capsys.readouterr().err


def test_segment_cli(released_style_file, tmp_path, capsys):
    import tifffile

    from samzoo import cli

    image = textured_image((100, 140), 9)
    tifffile.imwrite(tmp_path / "in.tif", image)
    assert cli.main(["segment", str(tmp_path / "in.tif"), "--model", str(released_style_file), "-o",
                     str(tmp_path / "out.tif"), "-q", "--param", "peak_threshold=0.5", "fill_threshold=0.3"]) == 0
    model = samzoo.load_model(released_style_file)
    expected = samzoo.segment(image, model, progress=False, params={"peak_threshold": 0.5, "fill_threshold": 0.3})
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), expected)
    assert cli.main(["segment", str(tmp_path / "in.tif"), "--model", str(released_style_file), "-o",
                     str(tmp_path / "out2.tif"), "--mode", "amg"]) == 2
    assert "SAMCell models have no modes" in capsys.readouterr().err


def test_distance_target_is_per_cell_normalised():
    from samzoo.families.samcell.training import distance_target

    labels = np.zeros((40, 60), np.uint16)
    labels[5:25, 5:25] = 1
    labels[5:25, 25:55] = 2  # touches cell 1: each cell has its own border
    labels[30:33, 40:43] = 7
    target = distance_target(labels)
    assert target[labels == 0].max() == 0
    for index in (1, 2, 7):
        assert target[labels == index].max() == pytest.approx(1.0)
        assert 0 < target[labels == index].min() <= 0.5
    assert target[15, 24] < 0.2 and target[15, 25] < 0.2  # the shared border is low on both sides


def test_train_cli_samcell_config(released_style_file, tmp_path, capsys):
    """`samzoo train` with a SAMCell config (family inferred from init_checkpoint's layout): the
    objective runs, validation loss is recorded, best.pt is a SAMCell checkpoint."""
    import json

    import tifffile
    import yaml

    from samzoo import cli
    from conftest import disk_image, disk_labels

    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (tmp_path / split / sub).mkdir(parents=True)
        for i in range(2):
            centers = ((30 + 10 * i, 40), (80, 90 - 10 * i))
            tifffile.imwrite(tmp_path / split / "images" / f"{i}.tif",
                             disk_image((120, 130), centers, 14, seed=i + (split == "val") * 10))
            tifffile.imwrite(tmp_path / split / "labels" / f"{i}.tif", disk_labels((120, 130), centers, 14))
    config = {"init_checkpoint": str(released_style_file), "iterations": 3, "warmup": 1, "val_crops": 2,
              "out_dir": str(tmp_path / "run"), "freeze_encoder": True,
              **{f"{s}_{k}": str(tmp_path / s / k) for s in ("train", "val") for k in ("images", "labels")}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(tmp_path / "cfg.yaml")]) == 0
    assert "SAMCell training" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["train_loss"]) == 3 and len(history["val_loss"]) >= 2
    assert family_of(samzoo.load_model(tmp_path / "run" / "best.pt")).name == "samcell"
    config["colour"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown SAMCell training setting(s) colour" in capsys.readouterr().err
