import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from samzoo import io as samzoo_io
from samzoo.errors import InputError
from samzoo.io import atomic_path, read_image, write_labels, write_png

RNG = np.random.default_rng(3)


def _no_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("name", ["img.tif", "img.TIFF", "img.npy"])
@pytest.mark.parametrize("shape, dtype", [((20, 30), np.uint16), ((4, 20, 30), np.float32), ((20, 30, 3), np.uint8)])
def test_lossless_round_trips(tmp_path, name, shape, dtype):
    data = (RNG.random(shape) * 1000).astype(dtype)
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, data)
    else:
        tifffile.imwrite(path, data, photometric="rgb" if shape[-1] == 3 else "minisblack")
    loaded = read_image(str(path))
    assert loaded.dtype == data.dtype
    np.testing.assert_array_equal(loaded, data)


def test_png_and_jpeg(tmp_path):
    rgb = RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    gray = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    write_png(tmp_path / "sub" / "g.png", gray)  # parent created
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "g.png"), gray)
    iio.imwrite(tmp_path / "b.jpeg", gray, extension=".jpeg", quality=95)
    deep = (gray.astype(np.uint16) * 257)
    iio.imwrite(tmp_path / "c16.png", deep, extension=".png")
    loaded = read_image(tmp_path / "c16.png")
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, deep)
    assert np.abs(read_image(tmp_path / "b.jpeg").astype(int) - gray).max() < 8
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "max_id, dtype", [(0, np.uint16), (65535, np.uint16), (65536, np.uint32), (2**32 - 1, np.uint32)]
)
def test_write_labels_picks_the_smallest_dtype(tmp_path, max_id, dtype):
    labels = np.zeros((3, 16, 16), np.int64)
    labels[1, 2:5, 2:5] = max_id
    labels[2, 8:, 8:] = 1 if max_id else 0
    path = write_labels(tmp_path / "deep" / "labels.tif", labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression != 1  # compressed
        stored = tif.asarray()
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK and len(tif.pages) == 3
    assert stored.dtype == dtype
    np.testing.assert_array_equal(stored, labels)
    assert _no_temp_files(path.parent)


def test_write_labels_accepts_bool_and_overwrites(tmp_path):
    path = tmp_path / "m.tiff"
    write_labels(path, np.ones((8, 8), np.int32) * 5)
    write_labels(path, np.eye(8, dtype=bool))
    np.testing.assert_array_equal(tifffile.imread(path), np.eye(8, dtype=np.uint16))


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "labels.tif"
    write_labels(path, np.ones((8, 8), np.uint8))
    before = path.read_bytes()

    def broken(file, data, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(samzoo_io.tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_labels(path, np.zeros((8, 8), np.uint8))
    assert path.read_bytes() == before
    assert _no_temp_files(tmp_path)


def test_atomic_path_keeps_suffix_and_normal_permissions(tmp_path):
    with atomic_path(tmp_path / "x.bin") as temp:
        assert temp.parent == tmp_path and temp.suffix == ".bin" and temp.exists()
        temp.write_bytes(b"ok")
    assert (tmp_path / "x.bin").read_bytes() == b"ok"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def _corrupt(tmp_path, name, content=b"this is not an image"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name", ["bad.tif", "bad.png", "bad.jpg", "bad.npy"])
def test_corrupt_files(tmp_path, name):
    path = _corrupt(tmp_path, name)
    with pytest.raises(InputError, match="cannot read image") as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_pickled_and_truncated_npy_are_rejected(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")
    np.save(tmp_path / "full.npy", np.zeros((100, 100)))
    truncated = _corrupt(tmp_path, "trunc.npy", (tmp_path / "full.npy").read_bytes()[:500])
    with pytest.raises(InputError, match="trunc.npy"):
        read_image(truncated)


def test_missing_directory_and_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.tif")
    with pytest.raises(InputError, match="directory"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="unsupported image type '.bmp'"):
        read_image(_corrupt(tmp_path, "x.bmp"))
    with pytest.raises(InputError, match="no extension"):
        read_image(_corrupt(tmp_path, "noext"))


@pytest.mark.parametrize(
    "name, labels, match",
    [
        ("l.png", np.zeros((8, 8), np.uint8), ".tif or .tiff"),
        ("l.tif", np.zeros((8, 8), np.float32), "integer dtype"),
        ("l.tif", np.full((8, 8), -2), "negative"),
        ("l.tif", np.full((8, 8), 2**33), "uint32"),
        ("l.tif", np.zeros(8, np.uint8), "2D or 3D"),
        ("l.tif", np.zeros((0, 8), np.uint8), "2D or 3D"),
    ],
)
def test_write_labels_validation(tmp_path, name, labels, match):
    with pytest.raises(InputError, match=match):
        write_labels(tmp_path / name, labels)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, rgb, match",
    [
        ("o.jpg", np.zeros((8, 8, 3), np.uint8), ".png"),
        ("o.png", np.zeros((8, 8, 3), np.float32), "uint8"),
        ("o.png", np.zeros((8, 8, 5), np.uint8), "shape"),
        ("o.png", np.zeros((2, 8, 8, 3), np.uint8), "shape"),
    ],
)
def test_write_png_validation(tmp_path, name, rgb, match):
    with pytest.raises(InputError, match=match):
        write_png(tmp_path / name, rgb)
