"""Rebuild a model from a BioImage.IO package (zip or unpacked folder), for any family.

Members are read straight from the zip (nothing is extracted); their names must be plain relative
paths inside the package, and sizes are capped, so a crafted archive cannot write anywhere or exhaust
memory. Before anything is used, the description is validated and every file it names is checked
against its sha256 (:mod:`samzoo.packaging.integrity`). Weights are read with
``torch.load(weights_only=True)``.

Packages samzoo wrote carry their family (``config.samzoo.family``, μSAM when absent) and what the
family needs to rebuild the model exactly in ``config.samzoo``; the family's ``FamilySpec.load``
gets the weights with ``package_config=config.samzoo``. Packages made elsewhere (micro-sam: weights
= ``{"model_state", "decoder_state"}`` or a bare SAM state dict, decoder possibly as an
``*_decoder.pt`` attachment) load like a checkpoint file: the family is recognised from the weights.
"""

from __future__ import annotations

import io
import os
import posixpath
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ModelNotFoundError, PackageIntegrityError
from .integrity import check_package, remember_valid

DESCRIPTION_NAMES = ("rdf.yaml", "bioimageio.yaml")
MAX_DESCRIPTION_BYTES = 16 * 1024 * 1024
MAX_WEIGHTS_BYTES = 16 * 1024 ** 3
MAX_COMPRESSION_RATIO = 200  # deflate of float weights is ~1.1x; far more means a zip bomb
RATIO_CHECK_MIN_BYTES = 4 << 20
"""Members smaller than this skip the ratio check: they cannot exhaust memory, and a legitimate small
test output that is all background (zeros) deflates past any ratio a bomb check could use."""


def _safe_member(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"package {what} is not a file name: {name!r}")
    if "://" in name:
        raise CheckpointError(f"package {what} {name!r} is a URL, not a file inside the package")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm.startswith(("/", "../")) or norm == ".." or ":" in norm.split("/")[0]:
        raise CheckpointError(f"package {what} {name!r} points outside the package")
    return norm


class _Package:
    """Uniform read access to a zip or a folder package."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            return
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(f"{path} is not a readable BioImage.IO package zip: {err}") from None

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def size(self, name: str) -> int | None:
        if self.zip is None:
            p = self._folder_path(name)
            return p.stat().st_size if p.is_file() else None
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            return None
        if (info.file_size > RATIO_CHECK_MIN_BYTES and info.compress_size
                and info.file_size / max(info.compress_size, 1) > MAX_COMPRESSION_RATIO):
            raise CheckpointError(f"package member {name} has an implausible compression ratio (zip bomb?)")
        # the ratio check trusts the declared compressed size: it must fit inside the archive
        if info.header_offset + info.compress_size > self.path.stat().st_size:
            raise PackageIntegrityError(f"package member {name} of {self.path} declares {info.compress_size} "
                                        f"compressed bytes, more than the archive holds (a forged zip)")
        return info.file_size

    def _folder_path(self, name: str) -> Path:
        root = self.path.resolve()
        p = (root / name).resolve()
        if root != p and root not in p.parents:
            raise CheckpointError(f"package file {name!r} points outside the package folder")
        return p

    def open(self, name: str):
        if self.zip is None:
            return open(self._folder_path(name), "rb")
        return _MemberStream(self.zip.open(name), name, self.path)

    def read(self, name: str, limit: int) -> bytes:
        size = self.size(name)
        if size is None:
            raise CheckpointError(f"package {self.path} has no file {name}")
        if size > limit:
            raise CheckpointError(f"package file {name} is {size} bytes, more than the {limit} allowed")
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise CheckpointError(f"package file {name} is larger than the {limit} bytes allowed")
        return data


class _MemberStream:
    """A zip member whose read errors are one-line :class:`PackageIntegrityError`s naming it.

    ``zipfile`` never inflates a member past the size the archive declares for it; a member whose
    data inflates further, or ends early, then fails its CRC or the stream -- as ``BadZipFile``,
    ``EOFError`` or ``zlib.error``, which would otherwise surface as tracebacks."""

    def __init__(self, stream: Any, name: str, archive: Path):
        self._stream, self._name, self._archive = stream, name, archive

    def read(self, n: int = -1) -> bytes:
        try:
            return self._stream.read(n)
        except (zipfile.BadZipFile, EOFError, zlib.error) as err:
            raise PackageIntegrityError(
                f"package member {self._name} of {self._archive} cannot be read ({str(err) or type(err).__name__}): "
                "its data does not match the size and checksum the zip declares") from None

    def __getattr__(self, attr: str) -> Any:  # seek, tell, seekable, ... for torch.load
        return getattr(self._stream, attr)

    def __enter__(self) -> "_MemberStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stream.close()


def _description(pkg: _Package) -> dict[str, Any]:
    import yaml

    for name in DESCRIPTION_NAMES:
        if pkg.size(name) is not None:
            try:
                data = yaml.safe_load(pkg.read(name, MAX_DESCRIPTION_BYTES).decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{pkg.path}: {name} is not valid YAML: {str(err).splitlines()[0]}") from None
            if not isinstance(data, dict):
                raise CheckpointError(f"{pkg.path}: {name} is not a mapping")
            return data
    raise ModelNotFoundError(f"{pkg.path} holds no rdf.yaml/bioimageio.yaml: not a BioImage.IO package")


def _load_weights(pkg: _Package, name: str) -> Mapping[str, Any]:
    size = pkg.size(name)
    if size is None:
        raise CheckpointError(f"package {pkg.path} lists weights {name} but does not contain them")
    if size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"package weights {name} are {size} bytes, more than the {MAX_WEIGHTS_BYTES} allowed")
    try:
        with pkg.open(name) as f:
            if pkg.zip is not None and pkg.zip.getinfo(name).compress_type != zipfile.ZIP_STORED:
                f = io.BytesIO(f.read())  # a deflated member is not cheaply seekable
            state = torch.load(f, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"cannot read the weights {name} of {pkg.path}: {str(err).splitlines()[0]}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"the weights {name} of {pkg.path} are a {type(state).__name__}, not a state dict")
    return state


def load_package_model(path: str | os.PathLike) -> Any:
    """The model inside a BioImage.IO package made by samzoo (exact round trip) or micro-sam."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"package not found: {path}")
    pkg = _Package(path)
    try:
        rdf = _description(pkg)
        checked = check_package(pkg, rdf, str(path))  # nothing in a changed or damaged package is used
        weights = (rdf.get("weights") or {}).get("pytorch_state_dict")
        if not isinstance(weights, Mapping) or "source" not in weights:
            raise CheckpointError(f"{path} has no pytorch_state_dict weights; samzoo can only load those")
        weights_name = _safe_member(weights["source"], "weights source")
        samzoo_cfg = (rdf.get("config") or {}).get("samzoo")
        if isinstance(samzoo_cfg, Mapping) and "model_config" in samzoo_cfg:
            from ..families import get_family

            family = get_family(str(samzoo_cfg.get("family", "microsam")))
            model = family.load(path, _load_weights(pkg, weights_name), package_config=samzoo_cfg,
                                architecture_kwargs=(weights.get("architecture") or {}).get("kwargs") or {})
        else:
            model = _load_foreign(pkg, rdf, weights_name)
        remember_valid(checked)
        return model
    finally:
        pkg.close()


def _load_foreign(pkg: _Package, rdf, weights_name: str) -> Any:
    """A package not made by samzoo: its weights (and a decoder attachment) load as a checkpoint file
    of whichever family recognises them."""
    from ..api import load_checkpoint_file

    decoder_name = None
    for att in rdf.get("attachments") or []:
        source = att.get("source") if isinstance(att, Mapping) else att
        if isinstance(source, str) and source.endswith("_decoder.pt"):
            decoder_name = _safe_member(source, "attachment")
    with tempfile.TemporaryDirectory(prefix="samzoo-pkg-") as tmp:
        files = {}
        for key, name in (("weights", weights_name), ("decoder", decoder_name)):
            if name is None:
                continue
            size = pkg.size(name)
            if size is None or size > MAX_WEIGHTS_BYTES:
                raise CheckpointError(f"package {pkg.path}: {name} is missing or too large")
            target = Path(tmp) / f"{key}.pt"
            with pkg.open(name) as src, open(target, "wb") as dst:
                copied = 0
                while chunk := src.read(1 << 20):
                    copied += len(chunk)
                    if copied > MAX_WEIGHTS_BYTES:
                        raise CheckpointError(f"package {pkg.path}: {name} is larger than allowed")
                    dst.write(chunk)
            files[key] = target
        return load_checkpoint_file(files["weights"], decoder_path=files.get("decoder"))
