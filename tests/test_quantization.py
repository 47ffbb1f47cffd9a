"""int8 dynamic quantisation of the μSAM ViT linears (``--precision int8``): labels, fingerprints, CLI."""

from __future__ import annotations

import pickle
from importlib import resources

import numpy as np
import pytest
import tifffile
import torch

from samzoo.errors import InputError
from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.families import family_of
from samzoo.families.microsam.quantization import is_quantized, quantize_int8
from samzoo.segmentation.api import resolve_model, segment, with_precision
from samzoo.segmentation.embedding_cache import model_fingerprint


@pytest.fixture(scope="module")
def shipped():
    return resolve_model(None)


@pytest.fixture(scope="module")
def crop():
    return tifffile.imread(str(resources.files("samzoo") / "data" / "sample_nuclei.tif"))[:256, :256]


def test_int8_labels_agree_with_float32(shipped, crop):
    """The shipped, trained model: int8 labels within mSA 0.98 of float32 (the issue's bound)."""
    reference = segment(crop, shipped, progress=False, embedding_cache=False)
    labels = segment(crop, shipped, progress=False, embedding_cache=False, precision="int8")
    assert reference.max() >= 5
    assert mean_segmentation_accuracy(labels, reference)[0] >= 0.98


def test_quantized_copy_leaves_the_model_alone(shipped):
    before = model_fingerprint(shipped)
    quantized = quantize_int8(shipped)
    assert is_quantized(quantized) and not is_quantized(shipped)
    assert isinstance(shipped.sam.image_encoder.blocks[0].mlp.lin1, torch.nn.Linear)
    assert quantized.ais_decoder.encoder is quantized.sam.image_encoder  # the decoder sees the int8 encoder
    assert quantize_int8(quantized) is quantized
    assert with_precision(shipped, "float32") is shipped
    # the embedding cache keys on the fingerprint: int8 embeddings never answer float32 lookups
    assert model_fingerprint(shipped) == before
    assert model_fingerprint(quantized) != before
    assert model_fingerprint(quantized) == model_fingerprint(pickle.loads(pickle.dumps(quantized)))


def test_int8_block_model_travels_as_float(shipped, crop):
    """Blockwise/dask: the block model pickles without its int8 copy and rebuilds it where it runs."""
    crop = crop[:128, :160]
    block_model = family_of(shipped).block_model(shipped, None, precision="int8")
    stats = block_model.intensity_stats(lambda r, c: crop[r, c], crop.shape, crop.dtype)
    maps = block_model.predict_maps([crop], [stats])[0]
    travelled = pickle.loads(pickle.dumps(block_model))
    assert "_int8_model" not in travelled.__dict__ and not is_quantized(travelled.model)
    np.testing.assert_array_equal(travelled.predict_maps([crop], [stats])[0], maps)


def test_bad_precision_is_one_line(shipped, crop):
    with pytest.raises(InputError, match="precision must be one of"):
        segment(crop, shipped, progress=False, precision="int4")


def test_cli_precision_int8(tmp_path, crop, capsys):
    from samzoo.cli import main

    image = tmp_path / "crop.tif"
    tifffile.imwrite(image, crop[:192, :192])
    out = tmp_path / "labels.tif"
    assert main(["segment", str(image), "-o", str(out), "--precision", "int8", "--quiet"]) == 0
    assert tifffile.imread(out).max() >= 3
    assert main(["segment", str(image), "-o", str(tmp_path / "x.tif"), "--precision", "int4"]) == 2
    assert "--precision" in capsys.readouterr().err
