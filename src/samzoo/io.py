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

DEFAULT_MAX_IMAGE_SAMPLES = 1 << 29  # ~537 million values, e.g. 23170 x 23170 gray; 2 GB as float32
MAX_SAMPLES_ENV = "SAMZOO_MAX_IMAGE_PIXELS"

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


def max_image_samples(limit: int | None = None) -> int:
    """The image size limit (values: pixels x channels x slices): ``limit``, else
    ``SAMZOO_MAX_IMAGE_PIXELS``, else 2**29. Larger data belongs in chunked formats (zarr)."""
    if limit is not None:
        return int(limit)
    text = os.environ.get(MAX_SAMPLES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_SAMPLES
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(f"{MAX_SAMPLES_ENV} must be a whole number, got {text!r}") from None
    if value < 1:
        raise InputError(f"{MAX_SAMPLES_ENV} must be >= 1, got {text!r}")
    return value


def _declared_shape(file: Path, suffix: str) -> tuple[int, ...]:
    """The shape a file says it holds, read from its header only (nothing is decoded)."""
    if suffix in TIFF_SUFFIXES:
        with tifffile.TiffFile(file) as tif:
            if not tif.series:
                return ()
            return tuple(int(v) for v in tif.series[0].shape)
    if suffix in NPY_SUFFIXES:
        return tuple(int(v) for v in np.load(file, mmap_mode="r", allow_pickle=False).shape)
    from PIL import Image

    with Image.open(file) as img:  # lazy: reads the header
        return (img.height, img.width, len(img.getbands()))


def _check_size(file: Path, suffix: str, limit: int) -> None:
    """Refuse files whose header claims more values than ``limit`` before decoding a byte of them:
    a 4 MB tiled TIFF can claim 65536 x 65536 pixels, a small PNG can inflate to gigabytes."""
    try:
        shape = _declared_shape(file, suffix)
    except MemoryError:
        raise
    except Exception as err:  # readers raise many unrelated types for corrupt headers
        raise InputError(f"cannot read image {file}: {_one_line(err)}") from None
    samples = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if samples > limit:
        raise InputError(
            f"image {file} claims shape {'x'.join(map(str, shape))} ({samples:,} values), more than the limit of "
            f"{limit:,}; raise it with {MAX_SAMPLES_ENV}=N (or max_samples=) if the file is genuine")


def read_image(path: str | os.PathLike[str], *, max_samples: int | None = None) -> np.ndarray:
    """Read a .tif/.tiff (tifffile), .png/.jpg/.jpeg (imageio) or .npy (no pickles) image.

    Returns the array as stored (layout checks happen in ``segmentation.preprocess``). Raises
    ``InputError`` naming the file when it is missing, a folder, of an unknown type, unreadable,
    or when its header claims more values than :func:`max_image_samples` (checked before decoding).
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
    limit = max_image_samples(max_samples)
    _check_size(file, suffix, limit)
    try:
        if suffix in TIFF_SUFFIXES:
            data = tifffile.imread(file)
        elif suffix in NPY_SUFFIXES:
            data = np.load(file, allow_pickle=False)
        else:
            from PIL import Image

            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = limit  # PIL's own bomb check then agrees with ours
            try:
                data = iio.imread(file, plugin="pillow")
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except MemoryError:
        raise
    except Exception as err:  # readers raise many unrelated types for corrupt files
        raise InputError(f"cannot read image {file}: {_one_line(err)}") from None
    if not isinstance(data, np.ndarray):
        raise InputError(f"cannot read image {file}: it does not contain a single array")
    if data.size > limit:  # a header that understated its content
        raise InputError(f"image {file} holds {data.size:,} values, more than the limit of {limit:,} ({MAX_SAMPLES_ENV})")
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
