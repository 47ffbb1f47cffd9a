"""Reading images and writing results, with one-line errors and atomic writes.

Why: readers raise a zoo of exception types (``TiffFileError``, ``OSError``, ``ValueError``...)
with multi-line messages; the CLI must instead say which file is wrong in one line. Writes go
to a temporary file in the target folder and are moved into place with ``os.replace``, so an
interrupted run never leaves a truncated TIFF that a later run would take as a result.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from .errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES + NPY_SUFFIXES


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file keeps ``path``'s suffix so writers that choose the format by extension
    still work. Parent folders are created. On any error the temporary file is removed and the
    existing ``path`` (if any) stays untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")
    # os.open instead of tempfile.mkstemp: the file gets the usual umask permissions, not 0600.
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temp
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a .tif/.tiff (tifffile), .png/.jpg/.jpeg (imageio) or .npy (no pickles) image.

    Returns the array as stored (layout checks happen in ``segmentation.preprocess``). Raises
    ``InputError`` naming the file when it is missing, a folder, of an unknown type or unreadable.
    """
    file = Path(path)
    if not file.exists():
        raise InputError(f"image file not found: {file}")
    if file.is_dir():
        raise InputError(f"expected an image file but got a directory: {file}")
    suffix = file.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        kind = file.suffix or "(no extension)"
        raise InputError(f"unsupported image type {kind!r} for {file}; expected one of {IMAGE_SUFFIXES}")
    try:
        if suffix in TIFF_SUFFIXES:
            data = tifffile.imread(file)
        elif suffix in NPY_SUFFIXES:
            data = np.load(file, allow_pickle=False)
        else:
            data = iio.imread(file, plugin="pillow")
    except MemoryError:
        raise
    except Exception as err:  # readers raise many unrelated types for corrupt files
        raise InputError(f"cannot read image {file}: {_one_line(err)}") from None
    if not isinstance(data, np.ndarray):
        raise InputError(f"cannot read image {file}: it does not contain a single array")
    return data


def write_labels(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write instance labels as a zlib-compressed TIFF (uint16 if ids fit, else uint32), atomically.

    uint16 halves the file size of typical results and opens in every viewer; uint32 is used only
    when an id exceeds 65535. Returns the written path.
    """
    target = Path(path)
    if target.suffix.lower() not in TIFF_SUFFIXES:
        raise InputError(f"label files are written as TIFF; use a .tif or .tiff name, not {target.name!r}")
    array = np.asarray(labels)
    if array.dtype.kind not in "biu":
        raise InputError(f"labels must have an integer dtype, got {array.dtype}")
    if array.ndim < 2 or array.size == 0:
        raise InputError(f"labels must be a non-empty 2D or 3D array, got shape {array.shape}")
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise InputError(f"labels contain negative ids (min {low})")
    if high > np.iinfo(np.uint32).max:
        raise InputError(f"label id {high} does not fit in uint32")
    dtype = np.uint16 if high <= np.iinfo(np.uint16).max else np.uint32
    with atomic_path(target) as temp:
        tifffile.imwrite(temp, array.astype(dtype, copy=False), photometric="minisblack", compression="zlib")
    return target


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write a uint8 gray ``(H, W)``, RGB or RGBA ``(H, W, 3|4)`` image as PNG, atomically."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise InputError(f"PNG output needs a .png name, not {target.name!r}")
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        raise InputError(f"PNG images must be uint8, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))) or array.size == 0:
        raise InputError(f"PNG images must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    with atomic_path(target) as temp:
        iio.imwrite(temp, array, extension=".png")
    return target
