"""Real-data training sources (split layout with manifest hashes) and the synthetic EM generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from samzoo.errors import InputError
from samzoo.training.data import build_source
from samzoo.training.split_data import SplitSource, load_split
from samzoo.training.synthetic_em import EM_KINDS, EMConfig, generate_em_sample

from conftest import real_data_root

SHARED = real_data_root() or Path("no-real-data")


def _write_set(root: Path, names=("a", "b")) -> None:
    rows = ["set\tsplit\tname\timage_sha256\tlabels_sha256"]
    for i, name in enumerate(names):
        image = np.full((40, 50), 10 * (i + 1), dtype=np.uint8)
        labels = np.zeros((40, 50), dtype=np.uint16)
        labels[5:15, 5:20] = 1
        for kind, array in (("images", image), ("labels", labels)):
            path = root / "toy" / "train" / kind / f"{name}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, array)
        digest = [hashlib.sha256((root / "toy" / "train" / k / f"{name}.tif").read_bytes()).hexdigest()
                  for k in ("images", "labels")]
        rows.append(f"toy\ttrain\t{name}\t{digest[0]}\t{digest[1]}")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")


def test_split_source_reads_checks_hashes_and_rescales(tmp_path):
    _write_set(tmp_path)
    source = build_source({"kind": "split", "set": "toy", "root": str(tmp_path), "scale": 0.5}, 64)
    image, labels = source.draw(np.random.default_rng(0))
    assert image.shape == labels.shape == (20, 25) and labels.max() == 1
    # a scale range: every draw its own factor within [low, high]
    ranged = build_source({"kind": "split", "set": "toy", "root": str(tmp_path), "scale": [0.5, 1.0]}, 64)
    heights = {ranged.draw(np.random.default_rng(seed))[1].shape[0] for seed in range(12)}
    assert len(heights) > 3 and min(heights) >= 20 and max(heights) <= 40
    with pytest.raises(InputError, match="low <= high"):
        build_source({"kind": "split", "set": "toy", "root": str(tmp_path), "scale": [1.0, 0.5]}, 64)
    assert [name for name, _, _ in load_split("toy", "train", tmp_path)] == ["a", "b"]
    # a changed file no longer matches MANIFEST.tsv
    tifffile.imwrite(tmp_path / "toy" / "train" / "labels" / "a.tif", np.zeros((40, 50), np.uint16))
    with pytest.raises(InputError, match="does not match MANIFEST"):
        load_split("toy", "train", tmp_path)
    with pytest.raises(InputError, match="no nope/train"):
        SplitSource("nope", "train", tmp_path)


def test_split_source_needs_a_root(monkeypatch):
    monkeypatch.delenv("SAMZOO_DATA_ROOT", raising=False)
    with pytest.raises(InputError, match="no data root"):
        SplitSource("toy", "train", None)


@pytest.mark.skipif(not (SHARED / "MANIFEST.tsv").is_file(), reason="the real data folder is not here")
def test_split_source_on_the_real_sets():
    for set_name in ("dsb2018-nuclei", "usiigaci-phase", "axondeepseg-sem"):
        source = SplitSource(set_name, "val", SHARED)
        image, labels = source.draw(np.random.default_rng(1))
        assert image.shape[:2] == labels.shape and labels.max() > 0


@pytest.mark.parametrize("kind", EM_KINDS)
def test_synthetic_em_kinds(kind):
    config = EMConfig(shape=(128, 128), kinds={kind: 1.0})
    image, labels = generate_em_sample(np.random.default_rng(3), config)
    again, _ = generate_em_sample(np.random.default_rng(3), config)
    np.testing.assert_array_equal(image, again)  # a pure function of the generator
    assert image.dtype == np.uint8 and labels.dtype == np.uint32 and image.shape == labels.shape == (128, 128)
    ids = np.unique(labels)
    assert len(ids) > 2 and np.array_equal(ids, np.arange(len(ids)))  # objects 1..N
    inside, outside = image[labels > 0].mean(), image[labels == 0].mean()
    assert abs(inside - outside) > 3  # objects differ from their surroundings


def test_synthetic_em_has_dark_and_bright_objects():
    signs = set()
    for seed in range(12):
        image, labels = generate_em_sample(np.random.default_rng(seed), EMConfig(shape=(96, 96), kinds={"mitochondria": 1.0}))
        if labels.max():
            signs.add(bool(image[labels > 0].mean() > image[labels == 0].mean()))
    assert signs == {True, False}


def test_synthetic_em_rejects_bad_config():
    with pytest.raises(InputError, match="kinds"):
        EMConfig(kinds={"ribosomes": 1.0})
    with pytest.raises(InputError, match="shape"):
        EMConfig(shape=(8, 8))
