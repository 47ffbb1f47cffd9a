"""Small real, annotated fluorescence nuclei images for evaluation, fetched from PyPI.

samzoo trains on synthetic data only, so it needs *real* images to show that a model generalises.
Only package registries are reachable from where samzoo is built and tested, so the images come
from a package that ships them as test data:

* ``stardist`` wheels contain ``stardist/data/images/img2d.tif`` and ``mask2d.tif``: a 512x512
  uint16 fluorescence nuclei image with 125 annotated nuclei from the 2018 Kaggle Data Science
  Bowl (BBBC038, Caicedo et al., Nature Methods 2019), used by StarDist as its 2D example.

The wheel is downloaded with ``pip download --no-deps`` into a temporary folder (stardist is
*not* installed), only the needed members are read from the archive by exact name, verified by
SHA-256, and cached. Nothing of this is committed to the repository. Other PyPI packages checked
and found to ship no labelled nuclei images: cellpose, cellpose-napari, splinedist, embedseg,
instanseg-torch, micro-sam, cellseg-metrics, fluospotter, nuclei; scikit-image's bundled data has
no annotated nuclei either.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samzoo.errors import InputError, SamzooError
from samzoo.io import atomic_path

__all__ = ["STARDIST_VERSION", "fetch_stardist_nuclei"]

STARDIST_VERSION = "0.9.2"
"""Pinned so that the recorded SHA-256 hashes stay valid."""

# Any one wheel holds the same data files; pinning the platform tags makes the download
# independent of the interpreter and OS that samzoo runs on.
_STARDIST_WHEEL_TAGS = (
    "--only-binary=:all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)

_MAX_MEMBER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Member:
    """A file inside a package archive with its expected size and SHA-256."""

    archive_path: str
    filename: str
    sha256: str


_STARDIST_MEMBERS = (
    _Member(
        "stardist/data/images/img2d.tif",
        "img2d.tif",
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
    ),
    _Member(
        "stardist/data/images/mask2d.tif",
        "mask2d.tif",
        "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
    ),
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_cached(folder: Path, members: tuple[_Member, ...]) -> bool:
    for member in members:
        path = folder / member.filename
        if not path.is_file() or _sha256(path.read_bytes()) != member.sha256:
            return False
    return True


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _pip_download(requirement: str, extra_args: tuple[str, ...], dest: Path) -> Path:
    """Download one distribution (no dependencies) with the running interpreter's pip."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--quiet", *extra_args, "--dest", str(dest), requirement,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SamzooError(f"could not run pip to download {requirement}: {exc}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise SamzooError(f"pip download of {requirement} failed (is PyPI reachable?): {last}")
    archives = sorted(dest.glob("*.whl")) + sorted(dest.glob("*.zip"))
    if len(archives) != 1:
        raise SamzooError(f"pip download of {requirement} produced {len(archives)} wheels, expected 1")
    return archives[0]


def _extract_verified(archive: Path, members: tuple[_Member, ...], folder: Path) -> None:
    """Copy the named members out of a wheel into ``folder`` after checking their hashes.

    Only exact member names are read, and output names come from our own table, so a crafted
    archive can neither write outside ``folder`` nor substitute a file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as wheel:
            for member in members:
                try:
                    info = wheel.getinfo(member.archive_path)
                except KeyError:
                    raise SamzooError(f"{archive.name} has no {member.archive_path}") from None
                if info.file_size > _MAX_MEMBER_BYTES:
                    raise SamzooError(f"{member.archive_path} in {archive.name} is unexpectedly large")
                data = wheel.read(info)
                digest = _sha256(data)
                if digest != member.sha256:
                    raise SamzooError(
                        f"{member.archive_path} from {archive.name} has SHA-256 {digest[:16]}..., "
                        f"expected {member.sha256[:16]}...; refusing to use it"
                    )
                _write_atomic(folder / member.filename, data)
    except zipfile.BadZipFile:
        raise SamzooError(f"{archive.name} is not a valid wheel") from None


def fetch_stardist_nuclei(cache_dir: str | os.PathLike[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The DSB 2018 fluorescence nuclei example shipped in the stardist wheel, with its labels.

    Downloads once (about 3 MB) into a temporary folder, keeps only the two verified TIFFs
    (about 1 MB) under ``cache_dir/stardist-<version>/``, and reads them from there afterwards.

    Returns:
        ``[(image, labels)]``: image (512, 512) uint16, labels (512, 512) uint32 with 125 nuclei.
    """
    import tifffile

    if cache_dir is None or str(cache_dir) == "":
        raise InputError("cache_dir must be a folder path")
    folder = Path(cache_dir) / f"stardist-{STARDIST_VERSION}"
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder")
    if not _is_cached(folder, _STARDIST_MEMBERS):
        with tempfile.TemporaryDirectory(prefix="samzoo-stardist-") as tmp:
            wheel = _pip_download(f"stardist=={STARDIST_VERSION}", _STARDIST_WHEEL_TAGS, Path(tmp))
            _extract_verified(wheel, _STARDIST_MEMBERS, folder)
    image = tifffile.imread(folder / "img2d.tif")
    labels = tifffile.imread(folder / "mask2d.tif").astype(np.uint32)
    return [(image, labels)]
