"""Package zips whose members lie about their sizes (issue 11): a weights member that declares a
small size but inflates past it, one that claims more compressed bytes than the archive holds, and
a plain zip bomb are each refused with one line (exit 2) -- without inflating the member into
memory first."""

from __future__ import annotations

import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import yaml
from _hub_servers import minimal_package
from conftest import one_line_exit_2

import samzoo
from samzoo.errors import CheckpointError, PackageIntegrityError

INFLATED = 64 * 1024 * 1024  # zeros: deflate makes ~64 KB of them


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _declare(path: Path, member: str, *, file_size: int | None = None, compress_size: int | None = None) -> None:
    """Rewrite the sizes a member declares, in its local header and its central directory entry."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    offsets = [(local + 18, local + 22)]
    at = data.find(b"PK\x01\x02")
    while at != -1:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46: at + 46 + length].decode() == member:
            offsets.append((at + 20, at + 24))
        at = data.find(b"PK\x01\x02", at + 4)
    assert len(offsets) == 2
    for compressed_at, size_at in offsets:
        if compress_size is not None:
            struct.pack_into("<I", data, compressed_at, compress_size)
        if file_size is not None:
            struct.pack_into("<I", data, size_at, file_size)
    path.write_bytes(bytes(data))


def _package(tmp_path: Path, name: str, *, hashed: bool = True) -> Path:
    files = minimal_package(bytes(INFLATED))
    if not hashed:  # then nothing checks the weights before they are read for loading
        rdf = yaml.safe_load(files["rdf.yaml"])
        rdf["weights"]["pytorch_state_dict"].pop("sha256")
        files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    return _zip(tmp_path / name, files)


def _load_within(path: Path, budget: int) -> Exception:
    """Load the package; return the error, checking Python allocated less than ``budget`` meanwhile."""
    import bioimageio.spec  # noqa: F401  (imported before measuring: its modules are not the member)

    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            samzoo.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < budget, f"{peak} bytes allocated while refusing {path.name}"
    return info.value


@pytest.mark.parametrize("hashed", [True, False], ids=["sha256-listed", "no-sha256"])
def test_member_inflating_past_its_declared_size(tmp_path, isolated_cache, hashed, capsys, image_tif):
    path = _package(tmp_path, "inflates.zip", hashed=hashed)
    _declare(path, "weights.pt", file_size=100_000)  # declares 100 KB; its data inflates to 64 MB
    err = _load_within(path, budget=INFLATED // 4)
    assert isinstance(err, PackageIntegrityError) and "weights.pt" in str(err) and "cannot be read" in str(err)
    one_line_exit_2(capsys, ["segment", image_tif, "-o", tmp_path / "out.tif", "-m", path], "weights.pt",
                    "does not match the size and checksum")
    assert not (tmp_path / "out.tif").exists()


def test_member_claiming_more_compressed_bytes_than_the_archive(tmp_path, isolated_cache, capsys, image_tif):
    """A forged compressed size would slip past the compression-ratio check; it cannot be larger
    than the archive itself."""
    path = _package(tmp_path, "forged.zip", hashed=False)
    _declare(path, "weights.pt", file_size=3_000_000_000, compress_size=16_000_000)
    err = _load_within(path, budget=INFLATED // 4)
    assert "declares 16000000 compressed bytes" in str(err)
    one_line_exit_2(capsys, ["segment", image_tif, "-o", tmp_path / "out.tif", "-m", path], "forged zip")


def test_plain_zip_bomb_is_refused_by_its_ratio(tmp_path, isolated_cache):
    path = _package(tmp_path, "bomb.zip")
    err = _load_within(path, budget=INFLATED // 4)
    assert "implausible compression ratio" in str(err)
