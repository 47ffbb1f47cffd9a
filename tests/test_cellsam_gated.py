"""Gated weights (CellSAM via the DeepCell portal) against a real stand-in portal on 127.0.0.1:
token from the environment, never printed; archive md5 checked; one member extracted safely."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile

import pytest

import samzoo
from samzoo.errors import DownloadError, RegistryError
from samzoo.hub import fetch_files, model_info
from samzoo.registry.registry import load_registry

from _hub_servers import hub_env, write_registry  # noqa: F401
from _portal_server import PortalServer

TOKEN = "tok-SECRET-4f2a9c"
ASSET = "models/cellsam-models_v9.tar.gz"


def make_archive(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def portal():
    srv = PortalServer(TOKEN).start()
    yield srv
    srv.stop()


def registry_for(tmp_path, portal, archive: bytes, member: str = "cellsam_v9/general.pt", ids=("gen",)):
    md5 = hashlib.md5(archive).hexdigest()
    entries = [{
        "id": model_id, "architecture": "cellsam", "family": "cellsam", "modality": "lm",
        "licence": "non-commercial academic only", "redistributable": False,
        "files": [{"role": "checkpoint", "url": portal.url("/api/getData/"), "hash": f"md5:{md5}",
                   "member": member if i == 0 else "cellsam_v9/extra.pt",
                   "gated": {"token_env": "TEST_PORTAL_TOKEN", "header": "X-Api-Key", "form": {"s3_key": ASSET},
                             "signup": "https://portal.example"}}],
    } for i, model_id in enumerate(ids)]
    return write_registry(tmp_path / "reg.yaml", entries)


def test_token_flow_downloads_verifies_extracts_and_caches(hub_env, portal, tmp_path, monkeypatch, capsys):
    archive = make_archive({"cellsam_v9/general.pt": b"GENERAL" * 100, "cellsam_v9/extra.pt": b"EXTRA" * 50})
    portal.add_asset(ASSET, archive)
    reg = registry_for(tmp_path, portal, archive, ids=("gen", "ext"))
    monkeypatch.setenv("TEST_PORTAL_TOKEN", TOKEN)
    path = fetch_files("gen", registry=reg, progress=False)["checkpoint"]
    assert path.read_bytes() == b"GENERAL" * 100
    assert portal.posts == [{"form": {"s3_key": ASSET}, "token": TOKEN}]
    assert portal.hits("/signed/cellsam-models_v9.tar.gz") == 1
    # the second model comes from the same archive: no new request
    assert fetch_files("ext", registry=reg, progress=False)["checkpoint"].read_bytes() == b"EXTRA" * 50
    assert len(portal.posts) == 1 and portal.hits("/signed/cellsam-models_v9.tar.gz") == 1
    # cached: works with the portal gone and no token
    portal.stop()
    monkeypatch.delenv("TEST_PORTAL_TOKEN")
    assert fetch_files("gen", registry=reg, progress=False)["checkpoint"] == path
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    # the cache metadata never holds the token either
    assert all(TOKEN not in p.read_text(errors="ignore") for p in hub_env.rglob("*") if p.is_file()
               and p.suffix == ".json")
    info = model_info("gen", registry=reg)
    assert info["licence"] == "non-commercial academic only" and info["redistributable"] is False


def test_missing_or_wrong_token_errors_never_show_it(hub_env, portal, tmp_path, monkeypatch):
    archive = make_archive({"cellsam_v9/general.pt": b"x"})
    portal.add_asset(ASSET, archive)
    reg = registry_for(tmp_path, portal, archive)
    monkeypatch.delenv("TEST_PORTAL_TOKEN", raising=False)
    with pytest.raises(DownloadError, match=r"TEST_PORTAL_TOKEN \(create one at https://portal.example\).*put the "
                                            r"archive"):
        fetch_files("gen", registry=reg, progress=False)
    assert portal.posts == []
    monkeypatch.setenv("TEST_PORTAL_TOKEN", "wrong-" + TOKEN)
    with pytest.raises(DownloadError, match="refused the token") as err:
        fetch_files("gen", registry=reg, progress=False)
    assert TOKEN not in str(err.value)
    # the CLI prints one line, no token
    proc = subprocess.run([sys.executable, "-m", "samzoo.cli", "fetch", "gen", "--registry", str(reg)],
                          capture_output=True, text=True, env={**__import__("os").environ})
    assert proc.returncode == 2 and proc.stderr.startswith("samzoo: error:")
    assert TOKEN not in proc.stdout + proc.stderr


def test_bad_archive_md5_and_unsafe_members(hub_env, portal, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_PORTAL_TOKEN", TOKEN)
    good = make_archive({"cellsam_v9/general.pt": b"x"})
    portal.add_asset(ASSET, make_archive({"cellsam_v9/general.pt": b"tampered"}))
    reg = registry_for(tmp_path, portal, good)  # the registry pins the good archive's md5
    with pytest.raises(DownloadError, match="failed verification"):
        fetch_files("gen", registry=reg, progress=False)
    assert not list((hub_env / "gated").glob("*.tar.gz"))
    # a link where the model should be is refused, nothing else of the archive is written anywhere
    evil = make_archive({"../../escape.pt": b"e"}, symlink="cellsam_v9/general.pt")
    portal.add_asset(ASSET, evil)
    reg = registry_for(tmp_path, portal, evil)
    with pytest.raises(DownloadError, match="not a regular file"):
        fetch_files("gen", registry=reg, progress=False)
    assert not (tmp_path / "escape.pt").exists() and not list(hub_env.rglob("escape.pt"))
    # a member path with .. is refused by the registry itself
    bad = write_registry(tmp_path / "bad.yaml", [{
        "id": "x", "architecture": "cellsam", "modality": "lm",
        "files": [{"role": "checkpoint", "url": "https://p.example/api/", "hash": "md5:" + "0" * 32,
                   "member": "../x.pt", "gated": {"token_env": "T", "header": "H"}}]}])
    with pytest.raises(RegistryError, match="relative path inside the archive"):
        load_registry(bad)


def test_user_placed_archive_is_verified_and_used_offline(hub_env, tmp_path, monkeypatch):
    archive = make_archive({"cellsam_v9/general.pt": b"MINE"})
    srv = PortalServer(TOKEN)  # never started: no network involved
    srv._server = None
    reg = write_registry(tmp_path / "reg.yaml", [{
        "id": "gen", "architecture": "cellsam", "family": "cellsam", "modality": "lm",
        "files": [{"role": "checkpoint", "url": "https://portal.invalid/api/getData/",
                   "hash": "md5:" + hashlib.md5(archive).hexdigest(), "member": "cellsam_v9/general.pt",
                   "gated": {"token_env": "TEST_PORTAL_TOKEN", "header": "X-Api-Key", "form": {"s3_key": ASSET}}}]}])
    monkeypatch.setenv("SAMZOO_OFFLINE", "1")
    placed = hub_env / "gated" / "cellsam-models_v9.tar.gz"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(archive[:-3] + b"xyz")
    with pytest.raises(DownloadError, match="does not match"):
        fetch_files("gen", registry=reg, progress=False)
    placed.write_bytes(archive)
    assert fetch_files("gen", registry=reg, progress=False)["checkpoint"].read_bytes() == b"MINE"


def test_shipped_registry_describes_cellsam_entries():
    reg = load_registry(None, offline=True)
    for model_id, member in (("cellsam-general", "cellsam_v1.2/cellsam_general.pt"),
                             ("cellsam-extra", "cellsam_v1.2/cellsam_extra.pt")):
        entry = reg.get(model_id)
        assert entry.family == "cellsam" and entry.redistributable is False and "non-commercial" in entry.licence
        rf = entry.file("checkpoint")
        assert rf.member == member and rf.hash == "md5:f41e6899c49fc8ce12f77a8d25594604"
        assert rf.gated["token_env"] == "DEEPCELL_ACCESS_TOKEN" and rf.gated["header"] == "X-Api-Key"
        assert rf.url == "https://users.deepcell.org/api/getData/"
