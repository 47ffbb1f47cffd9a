"""Shared test fixtures: a tiny random-init samzoo checkpoint and synthetic images with disks.

Importing samzoo first applies its torchvision fix (needed before segment_anything/torchvision).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import samzoo  # noqa: F401  (must come before segment_anything / torchvision)

# The models in tests are tiny, so intra-op threads buy little, while on a shared or
# oversubscribed CPU OpenMP's spinning threads make them many times slower (measured: a tiled
# 4096 px AIS pass took 74 s with 2 threads vs 8 s with 1 on 2 busy cores). Override with
# SAMZOO_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("SAMZOO_TEST_THREADS", "1")))


def real_data_root() -> Path | None:
    """The real annotated data (layout: ``samzoo.training.split_data``): $SAMZOO_DATA_ROOT, as in
    training, else a ``shared/data`` beside a parent folder of the tests; None when absent (tests
    that need it skip: the project must not need it)."""
    if os.environ.get("SAMZOO_DATA_ROOT"):
        return Path(os.environ["SAMZOO_DATA_ROOT"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data" / "MANIFEST.tsv").is_file():
            return parent / "shared" / "data"
    return None


def disk_image(shape=(96, 128), centers=((30, 40), (60, 90)), radius=12, *, dtype=np.uint8, noise=5.0,
               seed=0) -> np.ndarray:
    """Bright disks on a dark background (plus Gaussian noise); ``centers`` are (row, col)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    image = np.full(shape, 30.0)
    for r, c in centers:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = 200.0
    image += rng.normal(0.0, noise, shape)
    if np.dtype(dtype) == np.uint16:
        image = image * 16.0  # a typical 12-bit camera range
    if np.dtype(dtype).kind in "ui":
        image = np.clip(np.round(image), 0, np.iinfo(dtype).max)
    return image.astype(dtype)


def disk_labels(shape, centers, radius) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.uint32)
    for i, (r, c) in enumerate(centers, start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = i
    return labels


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Path of a random-init samzoo checkpoint of the "test" preset (with AIS decoder)."""
    from samzoo import SamzooModel, preset, save_checkpoint

    torch.manual_seed(0)
    model = SamzooModel(preset("test"), metadata={"name": "samzoo-test-random"})
    return save_checkpoint(model, tmp_path_factory.mktemp("models") / "tiny-test.pt")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The tiny test model, loaded once per session (do not modify it in tests)."""
    return samzoo.load_checkpoint(tiny_checkpoint)


@pytest.fixture
def fresh_model(tiny_checkpoint):
    """A private copy of the tiny test model (tests may patch or hook it)."""
    return samzoo.load_checkpoint(tiny_checkpoint)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point SAMZOO_CACHE_DIR at a fresh temporary folder for the test."""
    folder = tmp_path / "samzoo-cache"
    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def disks():
    """(image uint8 96x128 with two disks, centers (row, col), radius)."""
    centers, radius = ((30, 40), (60, 90)), 12
    return disk_image((96, 128), centers, radius), centers, radius


def one_line_exit_2(capsys, argv, *needles) -> str:
    """Run the CLI and check it failed the way users are promised: exit 2 and exactly one
    ``samzoo: error:`` line (deprecation notes aside) that names each of ``needles``."""
    from samzoo.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("samzoo: note:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("samzoo: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def image_tif(tmp_path, disks):
    import tifffile

    path = tmp_path / "img.tif"
    tifffile.imwrite(path, disks[0])
    return path
