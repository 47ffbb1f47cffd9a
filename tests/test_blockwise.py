"""Blockwise segmentation of stored arrays: same labels as the in-memory path, resumable, safe outputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile
import zarr

from conftest import disk_image
from samzoo.errors import InputError
from samzoo.families import family_of
from samzoo.segmentation.api import segment
from samzoo.segmentation.blockwise import SerialExecutor, segment_blockwise
from samzoo.stores import ArraySource, output_location, output_state, parse_location

# The random test model's maps sit near 0.5; these thresholds give it ~100 seeds on the disks.
PARAMS = {"center_distance_threshold": 0.58, "boundary_distance_threshold": 0.58, "min_size": 10}
TILE, HALO = 96, 16  # test preset: 128 px input


def _image(shape=(260, 300), n=40, seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    centers = [tuple(c) for c in rng.integers(8, min(shape) - 8, size=(n, 2))]
    return disk_image(shape, centers=centers, radius=9, dtype=dtype, seed=seed)


def _block_model(model, params=PARAMS, **kwargs):
    return family_of(model).block_model(model, params, **kwargs)


def _write_zarr(path, array, chunks, zarr_format=3):
    z = zarr.create_array(str(path), shape=array.shape, chunks=chunks, dtype=array.dtype, zarr_format=zarr_format)
    z[:] = array
    return path


def test_blockwise_2d_equals_segment(tiny_model, tmp_path):
    image = _image()
    expected = segment(image, tiny_model, tile_shape=TILE, halo=HALO, ais_params=PARAMS, progress=False)
    assert expected.max() > 20  # enough objects, several crossing block borders:
    assert len(set(np.unique(expected[TILE - 1])) & set(np.unique(expected[TILE])) - {0}) >= 3
    source = ArraySource.open(_write_zarr(tmp_path / "in.zarr", image, (64, 64)))
    result = segment_blockwise(source, output_location(tmp_path / "out.zarr"), _block_model(tiny_model),
                               tile_shape=TILE, halo=HALO, progress=False)
    labels = zarr.open_array(str(tmp_path / "out.zarr"))[:]
    np.testing.assert_array_equal(labels, expected)  # identical, ids included
    assert result.n_objects == int(expected.max()) and result.n_blocks == 12
    assert zarr.open_array(str(tmp_path / "out.zarr")).attrs["samzoo_complete"] is True
    assert not (tmp_path / "out.zarr.samzoo-scratch").exists()


def test_blockwise_pastes_window_cores_when_asked(tiny_model, tmp_path):
    """``blend_tiles=False``: each block's core from the window that owns it, as a bioimageio.core
    consumer of the package computes; equal to ``segment(blend_tiles=False)``, and not to the
    blended default (so the equality test above really checks blending)."""
    image = _image()
    pasted = segment(image, tiny_model, tile_shape=TILE, halo=HALO, ais_params=PARAMS, progress=False,
                     blend_tiles=False)
    blended = segment(image, tiny_model, tile_shape=TILE, halo=HALO, ais_params=PARAMS, progress=False)
    assert (pasted != blended).any()
    source = ArraySource.open(_write_zarr(tmp_path / "in.zarr", image, (64, 64)))
    segment_blockwise(source, output_location(tmp_path / "out.zarr"), _block_model(tiny_model), tile_shape=TILE,
                      halo=HALO, progress=False, blend_tiles=False)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[:], pasted)


def test_blockwise_volume_equals_segment_into_ome_zarr(tiny_model, tmp_path):
    rng = np.random.default_rng(1)
    centers = [tuple(c) for c in rng.integers(8, 170, size=(20, 2))]
    volume = np.stack([disk_image((180, 190), centers=centers, radius=8 + z % 3, seed=z) for z in range(3)])
    expected = segment(volume, tiny_model, tile_shape=TILE, halo=HALO, ais_params=PARAMS, progress=False,
                       is_volume=True)
    # input: an OME-Zarr image (NGFF 0.4, zarr v2) with a physical scale that the labels keep
    root = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=volume.shape, chunks=(1, 100, 100), dtype=volume.dtype)[:] = volume
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space", "unit": "micrometer"}
                                                             for n in "zyx"],
                                  "datasets": [{"path": "0", "coordinateTransformations": [
                                      {"type": "scale", "scale": [2.0, 0.5, 0.5]}]}]}]
    source = ArraySource.open(tmp_path / "in.ome.zarr")  # no key: the first level
    assert source.shape == volume.shape
    out = output_location(f"{tmp_path / 'out.ome.zarr'}:labels/cells")
    segment_blockwise(source, out, _block_model(tiny_model), tile_shape=TILE, halo=HALO, is_volume=True,
                      progress=False)
    labels = ArraySource.open(out).read()
    np.testing.assert_array_equal(labels, expected)
    cells = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r")["labels/cells"]
    ome = cells.attrs["ome"]
    assert ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
    assert ome["multiscales"][0]["axes"][0]["unit"] == "micrometer" and "image-label" in ome
    assert cells.attrs["samzoo_complete"] is True


class _CrashAfter(SerialExecutor):
    """Stops the run (like a killed process) after ``n`` map tasks."""

    def __init__(self, n):
        self.n = n

    def map(self, function, items, *, desc, progress, **kwargs):
        if desc != "maps":
            return super().map(function, items, desc=desc, progress=progress, **kwargs)
        for item in items[: self.n]:
            function(item, **kwargs)
        raise KeyboardInterrupt


def test_blockwise_resumes_after_a_crash_and_guards_outputs(tiny_model, tmp_path):
    image = _image((200, 200), n=25, seed=3)
    source = ArraySource.open(_write_zarr(tmp_path / "in.zarr", image, (100, 100), zarr_format=2))
    out = output_location(tmp_path / "out.zarr")
    model = _block_model(tiny_model)
    with pytest.raises(KeyboardInterrupt):
        segment_blockwise(source, out, model, tile_shape=TILE, halo=HALO, executor=_CrashAfter(4), progress=False)
    job_attrs = dict(zarr.open_array(str(tmp_path / "out.zarr")).attrs)
    assert job_attrs["samzoo_complete"] is False  # a partial store is never taken as done
    assert output_state(out, job_attrs["samzoo_fingerprint"]) == "partial"
    resumed = segment_blockwise(source, out, model, tile_shape=TILE, halo=HALO, progress=False)
    assert resumed.resumed_maps == 4  # model windows kept from the interrupted run
    expected = segment(image, tiny_model, tile_shape=TILE, halo=HALO, ais_params=PARAMS, progress=False)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[:], expected)

    again = segment_blockwise(source, out, model, tile_shape=TILE, halo=HALO, progress=False)
    assert again.skipped  # complete, same job
    with pytest.raises(InputError, match="already holds other data"):
        segment_blockwise(source, out, model, tile_shape=TILE, halo=24, progress=False)
    redone = segment_blockwise(source, out, model, tile_shape=TILE, halo=24, overwrite=True, progress=False)
    assert not redone.skipped and redone.n_objects > 0


def test_blocks_smaller_than_the_model_input_are_refused(tiny_model, tmp_path):
    source = ArraySource.open(_write_zarr(tmp_path / "in.zarr", _image((100, 100), n=5), (50, 50)))
    with pytest.raises(InputError, match="smaller than the model's 128 px input"):
        segment_blockwise(source, output_location(tmp_path / "o.zarr"), _block_model(tiny_model), tile_shape=40,
                          halo=8, progress=False)


# ------------------------------------------------------------------------------------ stores


def test_stores_read_every_format_lazily(tmp_path):
    import h5py
    import tensorstore as ts

    data = np.arange(60 * 70, dtype=np.uint16).reshape(60, 70)
    block = (slice(10, 30), slice(5, 50))
    _write_zarr(tmp_path / "a.zarr", data, (16, 16), zarr_format=2)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw/s0", shape=data.shape, chunks=(32, 32), dtype=data.dtype)[:] = data
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("vol/raw", data=data, chunks=(16, 16))
    ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "c.n5" / "setup0")},
             "metadata": {"dimensions": list(data.shape), "blockSize": [16, 16], "dataType": "uint16",
                          "compression": {"type": "raw"}}, "create": True}).result().write(data).result()
    tifffile.imwrite(tmp_path / "big.tif", data)
    tifffile.imwrite(tmp_path / "tiled.tif", data, tile=(32, 32), compression="zlib")
    for text in ("a.zarr", "g.zarr:raw/s0", "f.h5:/vol/raw", "c.n5:setup0", "big.tif", "tiled.tif"):
        source = ArraySource.open(tmp_path / text if ":" not in text else f"{tmp_path}/{text}")
        assert source.shape == data.shape and source.dtype == data.dtype, text
        np.testing.assert_array_equal(source.read(block), data[block], err_msg=text)
    assert isinstance(ArraySource.open(tmp_path / "big.tif").array, np.memmap)  # not loaded

    for text, message in (("g.zarr", "zarr group; name the dataset as PATH:KEY .*raw/s0"),
                          ("g.zarr:raw/s9", "no dataset 'raw/s9' .*raw/s0"),
                          ("f.h5", "HDF5 file; name the dataset .*vol/raw"),
                          ("f.h5:nope", "no dataset 'nope'"),
                          ("c.n5", "name the dataset as PATH:KEY .*setup0"),
                          ("missing.zarr", "zarr store not found")):
        with pytest.raises(InputError, match=message):
            ArraySource.open(f"{tmp_path}/{text}")


def test_locations_parse_keys():
    assert parse_location("/d/x.h5:/a/b").key == "a/b"
    assert parse_location("C:/data/x.zarr").key is None
    with pytest.raises(InputError, match="not an array store"):
        parse_location("image.png")
    assert json.dumps(str(output_location("o.n5")))  # N5 and HDF5 outputs get a default key


def test_labels_to_n5_and_hdf5(tiny_model, tmp_path):
    image = _image((150, 160), n=12, seed=5)
    source = ArraySource.open(_write_zarr(tmp_path / "in.zarr", image, (64, 64)))
    expected = segment(image, tiny_model, tile_shape=TILE, halo=HALO, ais_params=PARAMS, progress=False)
    for name in ("out.n5:seg", "out.h5:seg"):
        out = output_location(f"{tmp_path}/{name}")
        segment_blockwise(source, out, _block_model(tiny_model), tile_shape=TILE, halo=HALO, progress=False)
        np.testing.assert_array_equal(ArraySource.open(out).read(), expected, err_msg=name)


def test_blockwise_cli(tiny_checkpoint, tmp_path, capsys):
    from samzoo.cli import main

    image = _image((150, 160), n=12, seed=9)
    _write_zarr(tmp_path / "in.zarr", image, (64, 64))
    argv = ["segment", str(tmp_path / "in.zarr"), "-o", f"{tmp_path}/out.zarr:seg", "--model", str(tiny_checkpoint),
            "-q", "--tile-shape", "96", "--halo", "16", "--param", "center_distance_threshold=0.58",
            "boundary_distance_threshold=0.58"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(argv) == 0
    assert "complete already" in capsys.readouterr().out
    # the precision is part of what a store holds: a float32 result is not an int8 one
    assert main(argv + ["--precision", "int8"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--precision", "int8", "--overwrite"]) == 0
    assert "wrote" in capsys.readouterr().out
    import h5py

    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["raw"] = image
    assert main(["segment", str(tmp_path / "in.h5"), "-o", str(tmp_path / "o.zarr"), "-q"]) == 2
    assert "name the dataset as PATH:KEY (it holds: raw)" in capsys.readouterr().err
    assert main(argv[:3] + [f"{tmp_path}/in.zarr"] + argv[4:]) == 2  # output = input
    assert "is the input" in capsys.readouterr().err


def _native_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.slow
@pytest.mark.skipif(not (_native_bf16() or os.environ.get("SAMZOO_TEST_BF16") == "1"),
                    reason="no AVX-512 BF16/AMX: bfloat16 is emulated (minutes); SAMZOO_TEST_BF16=1 runs it anyway")
def test_bfloat16_inference_agrees_with_float32():
    """The optional bfloat16 path (CPU autocast) on the shipped, trained model: mSA >= 0.98."""
    from importlib import resources

    from samzoo.evaluation.metrics import mean_segmentation_accuracy
    from samzoo.segmentation.api import resolve_model

    model = resolve_model(None)
    image = tifffile.imread(str(resources.files("samzoo") / "data" / "sample_nuclei.tif"))[:256, :256]
    labels = {}
    for precision in ("float32", "bfloat16"):
        block_model = family_of(model).block_model(model, None, precision=precision)
        stats = block_model.intensity_stats(lambda r, c: image[r, c], image.shape, image.dtype)
        labels[precision] = block_model.labels_from_maps(block_model.predict_maps([image], [stats])[0])
    assert labels["float32"].max() >= 5
    assert mean_segmentation_accuracy(labels["bfloat16"], labels["float32"])[0] >= 0.98


def test_the_encoder_neck_stays_float32_under_bfloat16_autocast(tiny_model):
    """The neck's LayerNorm2d statistics in bfloat16 moved watershed seeds; it runs in float32
    under autocast, with the same state-dict keys as SAM's plain neck."""
    import torch

    encoder = tiny_model.sam.image_encoder
    assert {"neck.0.weight", "neck.1.weight", "neck.2.weight", "neck.3.bias"} <= set(encoder.state_dict())
    images = torch.rand(1, 3, 64, 64) * 255
    seen = []
    hook = encoder.neck[1].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].dtype))
    try:
        with torch.no_grad():
            reference, _ = tiny_model.embed(images)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed, _ = tiny_model.embed(images)
                attention = encoder.blocks[0].attn.qkv(torch.randn(2, encoder.blocks[0].attn.qkv.in_features))
    finally:
        hook.remove()
    assert attention.dtype == torch.bfloat16  # the trunk is autocast
    assert seen == [torch.float32, torch.float32]  # the neck's LayerNorm2d gets float32 input
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, reference, atol=0.1)
