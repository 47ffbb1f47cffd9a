"""Real-data fetching, tested offline with a fake wheel (no network needed)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from samzoo.errors import InputError, SamzooError
from samzoo.evaluation import real_data


def _tif_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


@pytest.fixture
def fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A wheel holding a tiny image/mask pair, with the module's hash table pointed at it."""
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    mask = np.zeros((8, 8), dtype=np.uint16)
    mask[2:5, 2:5] = 3
    files = {"img2d.tif": _tif_bytes(image), "mask2d.tif": _tif_bytes(mask)}
    wheel = tmp_path / "stardist-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"stardist/data/images/{name}", data)
        archive.writestr("../evil.tif", b"x")  # never read: members are looked up by exact name
    members = tuple(
        real_data._Member(f"stardist/data/images/{name}", name, hashlib.sha256(data).hexdigest())
        for name, data in files.items()
    )
    monkeypatch.setattr(real_data, "_STARDIST_MEMBERS", members)
    calls: list[str] = []

    def fake_download(requirement: str, extra_args: tuple[str, ...], dest: Path) -> Path:
        calls.append(requirement)
        return wheel

    monkeypatch.setattr(real_data, "_pip_download", fake_download)
    return {"image": image, "mask": mask, "calls": calls, "wheel": wheel}


def test_fetch_extracts_verifies_and_caches(tmp_path: Path, fake_wheel: dict) -> None:
    cache = tmp_path / "cache"
    [(image, labels)] = real_data.fetch_stardist_nuclei(cache)
    np.testing.assert_array_equal(image, fake_wheel["image"])
    assert labels.dtype == np.uint32
    np.testing.assert_array_equal(labels, fake_wheel["mask"])
    assert fake_wheel["calls"] == [f"stardist=={real_data.STARDIST_VERSION}"]
    real_data.fetch_stardist_nuclei(cache)
    assert len(fake_wheel["calls"]) == 1  # second call served from the cache
    assert not (tmp_path / "evil.tif").exists()
    assert sorted(p.name for p in (cache / f"stardist-{real_data.STARDIST_VERSION}").iterdir()) == [
        "img2d.tif",
        "mask2d.tif",
    ]


def test_corrupted_cache_is_refetched(tmp_path: Path, fake_wheel: dict) -> None:
    real_data.fetch_stardist_nuclei(tmp_path)
    (tmp_path / f"stardist-{real_data.STARDIST_VERSION}" / "mask2d.tif").write_bytes(b"garbage")
    [(_, labels)] = real_data.fetch_stardist_nuclei(tmp_path)
    np.testing.assert_array_equal(labels, fake_wheel["mask"])
    assert len(fake_wheel["calls"]) == 2


def test_hash_mismatch_is_refused(tmp_path: Path, fake_wheel: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = tuple(
        real_data._Member(m.archive_path, m.filename, "0" * 64) for m in real_data._STARDIST_MEMBERS
    )
    monkeypatch.setattr(real_data, "_STARDIST_MEMBERS", wrong)
    with pytest.raises(SamzooError, match="SHA-256"):
        real_data.fetch_stardist_nuclei(tmp_path)
    assert not any((tmp_path / f"stardist-{real_data.STARDIST_VERSION}").glob("*.tif"))


def test_missing_member_and_bad_archive(tmp_path: Path) -> None:
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.txt", b"")
    with pytest.raises(SamzooError, match="has no"):
        real_data._extract_verified(empty, real_data._STARDIST_MEMBERS, tmp_path / "out")
    broken = tmp_path / "broken.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SamzooError, match="not a valid wheel"):
        real_data._extract_verified(broken, real_data._STARDIST_MEMBERS, tmp_path / "out")


def test_pip_failure_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="ERROR: network down\n")

    monkeypatch.setattr(real_data.subprocess, "run", failing_run)
    with pytest.raises(SamzooError, match="network down") as info:
        real_data._pip_download("stardist==0.9.2", (), tmp_path)
    assert "\n" not in str(info.value)


def test_bad_cache_dir(tmp_path: Path) -> None:
    blocker = tmp_path / f"stardist-{real_data.STARDIST_VERSION}"
    blocker.write_text("a file, not a folder")
    with pytest.raises(InputError):
        real_data.fetch_stardist_nuclei(tmp_path)
