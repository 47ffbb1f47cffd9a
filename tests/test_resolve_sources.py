"""Model sources beyond the registry: resolve() parsing, hf:// against a local HF-compatible
endpoint, Zenodo records via SAMZOO_ZENODO_URL, bioimage.io IDs through bioimageio.spec's own
resolution (pointed at a local server), and local files/folders."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest
import yaml
from _hub_servers import (  # noqa: F401
    FakeHfHub,
    FileServer,
    bioimageio_model,
    hub_env,
    server,
    zenodo_record,
)

from samzoo.errors import DownloadError, HashMismatchError, ModelNotFoundError, OfflineError
from samzoo.hub import cache_list, fetch, fetch_files, resolve

# ------------------------------------------------------------------------------------------
# resolve(): what a string names, without network


@pytest.mark.parametrize("query, kind, canonical", [
    ("vit_b_lm", "registry", "vit_b_lm"),
    ("Noisy-Ox/1.2", "registry", "vit_b_em_organelles"),
    ("hf://org/repo", "huggingface", "hf://org/repo@main"),
    ("hf://org/repo@v1.0", "huggingface", "hf://org/repo@v1.0"),
    ("10.5281/zenodo.1234", "zenodo", "10.5281/zenodo.1234"),
    ("doi:10.5281/zenodo.1234", "zenodo", "10.5281/zenodo.1234"),
    ("https://doi.org/10.5281/zenodo.1234", "zenodo", "10.5281/zenodo.1234"),
    ("10.5281/zenodo.5764892/6647674", "zenodo", "10.5281/zenodo.6647674"),
    ("https://zenodo.org/records/1234", "zenodo", "10.5281/zenodo.1234"),
    ("https://zenodo.org/record/1234/files/vit_b.pt", "zenodo", "10.5281/zenodo.1234#vit_b.pt"),
    ("https://example.org/m/model.pt#sha256=" + "a" * 64, "url", "https://example.org/m/model.pt"),
    ("https://example.org/pkg/rdf.yaml", "bioimageio", "https://example.org/pkg/rdf.yaml"),
    ("affable-shark", "bioimageio", "affable-shark"),
    ("Affable-Shark/1.2", "bioimageio", "affable-shark/1.2"),
    ("affable-shark/draft", "bioimageio", "affable-shark/draft"),
])
def test_resolve_kinds(hub_env, query, kind, canonical):
    res = resolve(query)
    assert (res.kind, res.id) == (kind, canonical)


def test_resolve_details(hub_env, monkeypatch):
    res = resolve("https://example.org/m/model.pt#sha256=" + "A" * 64)
    assert res.files[0].hash == "sha256:" + "a" * 64 and res.files[0].role == "checkpoint"
    assert res.files[0].url == "https://example.org/m/model.pt"
    assert resolve("https://example.org/p.zip").files[0].role == "package"
    monkeypatch.setenv("SAMZOO_ZENODO_URL", "http://127.0.0.1:9/")
    res = resolve("10.5281/zenodo.77")
    assert res.details["api_url"] == "http://127.0.0.1:9/api/records/77"
    # record URLs on the configured host, and zenodo.org ones routed to it
    assert resolve("http://127.0.0.1:9/records/77").details["api_url"] == "http://127.0.0.1:9/api/records/77"
    assert resolve("https://zenodo.org/records/77").details["base_url"] == "http://127.0.0.1:9"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert resolve("hf://a/b@abc").location == "http://127.0.0.1:9/a/b/tree/abc"


@pytest.mark.parametrize("query, fragment", [
    ("hf://just-a-name", "hf://ORG/REPO"),
    ("10.1038/s41592-024-02580-4", "not a Zenodo one"),
    ("https://example.org/m.pt#md5=abc", "bad hash fragment"),
    ("https://example.org/m.pt#download", "not a hash"),
    ("./missing/model.pt", "no such file"),
    ("missing.pth", "no such file"),
    ("vit_b_lm_em", "did you mean"),
    ("", "empty model ID"),
])
def test_resolve_errors(hub_env, query, fragment):
    with pytest.raises(ModelNotFoundError, match=fragment):
        resolve(query)


# ------------------------------------------------------------------------------------------
# local files and folders


def test_local_sources(hub_env, tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    assert fetch(str(ckpt)) == ckpt.resolve()
    assert fetch(ckpt.as_uri()) == ckpt.resolve()
    zpath = tmp_path / "pkg.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("rdf.yaml", "type: model\n")
    assert fetch_files(zpath) == {"package": zpath.resolve()}
    pkg = tmp_path / "unpacked"
    pkg.mkdir()
    (pkg / "rdf.yaml").write_text("type: model\n")
    (pkg / "vit_b.pt").write_bytes(b"c")
    (pkg / "vit_b_decoder.pt").write_bytes(b"d")
    files = fetch_files(pkg)
    assert files == {"package": pkg.resolve(), "checkpoint": pkg.resolve() / "vit_b.pt",
                     "decoder": pkg.resolve() / "vit_b_decoder.pt"}
    assert fetch_files(pkg / "rdf.yaml")["package"] == pkg.resolve()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "sam.pth").write_bytes(b"c")
    assert fetch(plain, offline=True) == plain.resolve() / "sam.pth"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="holds no BioImage.IO package"):
        fetch(empty)
    assert cache_list() == []  # local sources are used in place


# ------------------------------------------------------------------------------------------
# hf:// against the local endpoint


@pytest.fixture
def hf_hub(hub_env, monkeypatch):
    hub = FakeHfHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.base)
    yield hub
    hub.stop()


def test_hf_snapshot_revisions_and_cache(hf_hub):
    old = hf_hub.add_commit("lab/usam", {"vit_b.pt": b"old" * 1000, "README.md": b"# v1"}, refs=("v1",))
    hf_hub.add_commit("lab/usam", {"vit_b.pt": b"new" * 1000, "vit_b_decoder.pt": b"dec" * 500,
                                   "README.md": b"# main"}, refs=("main",))
    files = fetch_files("hf://lab/usam", progress=False)
    assert files["checkpoint"].read_bytes() == b"new" * 1000
    assert files["decoder"].read_bytes() == b"dec" * 500
    assert fetch("hf://lab/usam@v1", progress=False).read_bytes() == b"old" * 1000
    assert fetch(f"hf://lab/usam@{old}", progress=False).read_bytes() == b"old" * 1000
    assert hf_hub.hits("/lab/usam/resolve/" + old + "/vit_b.pt") == 1  # downloaded once for v1 and the hash
    n = hf_hub.total_requests
    hf_hub.stop()
    assert fetch_files("hf://lab/usam", progress=False) == files  # served from the cache
    assert fetch("hf://lab/usam@v1", offline=True).read_bytes() == b"old" * 1000
    assert hf_hub.total_requests == n
    assert [i.id for i in cache_list()] == ["hf://lab/usam"]


def test_hf_offline_never_connects(hf_hub):
    hf_hub.add_commit("lab/usam", {"vit_b.pt": b"w" * 100})
    with pytest.raises(OfflineError, match="samzoo fetch hf://lab/usam"):
        fetch("hf://lab/usam", offline=True)
    assert hf_hub.total_requests == 0


def test_hf_missing_repo_and_revision(hf_hub):
    hf_hub.add_commit("lab/usam", {"vit_b.pt": b"w" * 100})
    with pytest.raises(ModelNotFoundError, match="revision 'nope' does not exist"):
        fetch("hf://lab/usam@nope", progress=False)
    with pytest.raises(ModelNotFoundError, match="repo lab/other not found"):
        fetch("hf://lab/other", progress=False)


def test_hf_endpoint_down(hf_hub):
    hf_hub.stop()
    with pytest.raises(DownloadError, match="could not download hf://lab/usam.*Connect"):
        fetch("hf://lab/usam", progress=False)


def test_hf_corrupt_file_is_rejected(hf_hub):
    hf_hub.add_commit("lab/usam", {"vit_b.pt": b"w" * 4096, "README.md": b"# ok"})
    hf_hub.corrupt.add(("lab/usam", "vit_b.pt"))
    with pytest.raises(HashMismatchError, match="vit_b.pt .* failed verification"):
        fetch("hf://lab/usam", progress=False)
    with pytest.raises(OfflineError):  # nothing trusted was left behind
        fetch("hf://lab/usam", offline=True)
    hf_hub.corrupt.clear()
    assert fetch("hf://lab/usam", progress=False).read_bytes() == b"w" * 4096


# ------------------------------------------------------------------------------------------
# Zenodo records via SAMZOO_ZENODO_URL


@pytest.fixture
def zenodo(hub_env, server, monkeypatch):
    monkeypatch.setenv("SAMZOO_ZENODO_URL", server.base)
    return server


def test_zenodo_record_by_doi_then_cache(zenodo):
    zenodo_record(zenodo, 4242, {"vit_b.pt": b"ckpt" * 500, "vit_b_decoder.pt": b"dec" * 100, "notes.txt": b"hi"})
    files = fetch_files("doi:10.5281/zenodo.4242", progress=False)
    assert files["checkpoint"].read_bytes() == b"ckpt" * 500 and files["decoder"].name == "vit_b_decoder.pt"
    assert zenodo.hits("/api/records/4242") == 1
    zenodo.stop()
    for form in ("10.5281/zenodo.4242", "https://doi.org/10.5281/zenodo.4242", f"{zenodo.base}/records/4242"):
        assert fetch_files(form) == files
    assert fetch("10.5281/zenodo.4242", offline=True) == files["checkpoint"]


def test_zenodo_single_file_url(zenodo):
    zenodo_record(zenodo, 7, {"a.pt": b"A" * 100, "b_decoder.pt": b"B" * 100})
    path = fetch(f"{zenodo.base}/records/7/files/a.pt?download=1", progress=False)
    assert path.read_bytes() == b"A" * 100
    assert zenodo.hits("/api/records/7/files/b_decoder.pt/content") == 0
    with pytest.raises(ModelNotFoundError, match="has no file 'c.pt'"):
        fetch(f"{zenodo.base}/records/7/files/c.pt", progress=False)


def test_zenodo_md5_mismatch_and_missing_record(zenodo):
    zenodo_record(zenodo, 9, {"vit_b.pt": b"x" * 100}, bad_md5="vit_b.pt")
    with pytest.raises(HashMismatchError, match="md5:"):
        fetch("10.5281/zenodo.9", progress=False)
    assert not list(Path(os.environ["SAMZOO_CACHE_DIR"]).rglob("vit_b.pt"))  # nothing cached
    with pytest.raises(ModelNotFoundError, match="404"):
        fetch("10.5281/zenodo.10", progress=False)


def test_zenodo_offline_never_connects(zenodo):
    zenodo_record(zenodo, 11, {"vit_b.pt": b"x"})
    with pytest.raises(OfflineError):
        fetch("10.5281/zenodo.11", offline=True)
    assert zenodo.total_requests == 0


# ------------------------------------------------------------------------------------------
# bioimage.io IDs through bioimageio.spec's resolution (its settings point at the local server)


@pytest.fixture
def bioimageio_server(hub_env, server, monkeypatch):
    from bioimageio.spec import settings
    from bioimageio.spec._internal.io_utils import get_id_map

    monkeypatch.setattr(settings, "collection_http_pattern",
                        server.base + "/bioimage-io/artifacts/{bioimageio_id}/files/rdf.yaml")
    monkeypatch.setattr(settings, "id_map", server.base + "/id_map.json")
    monkeypatch.setattr(settings, "id_map_draft", server.base + "/id_map_draft.json")
    get_id_map.cache_clear()
    yield server
    get_id_map.cache_clear()


def test_bioimageio_id_fetches_the_package(bioimageio_server):
    srv = bioimageio_server
    served = bioimageio_model(srv, "/bioimage-io/artifacts/tiny-test/files", b"weights" * 100,
                              extra={"vit_b.pt": b"sam" * 100, "vit_b_decoder.pt": b"dec" * 100})
    files = fetch_files("tiny-test", progress=False)
    folder = files["package"]
    assert folder.is_dir() and (folder / "rdf.yaml").is_file()
    # weights.pt and vit_b.pt are both checkpoint candidates: ambiguous, so only the package is named
    assert "checkpoint" not in files and files["decoder"] == folder / "vit_b_decoder.pt"
    for name, data in served.items():
        assert (folder / name).read_bytes() == data
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    assert rdf["weights"]["pytorch_state_dict"]["source"] == "weights.pt"
    assert srv.hits("/bioimage-io/artifacts/tiny-test/files/rdf.yaml") == 1
    n = srv.total_requests
    srv.stop()
    assert fetch_files("tiny-test") == files
    assert fetch_files("tiny-test", offline=True) == files
    assert srv.total_requests == n


def test_bioimageio_versioned_id_and_hash_check(bioimageio_server):
    srv = bioimageio_server
    bioimageio_model(srv, "/bioimage-io/artifacts/tiny-test/1.2/files", b"v12" * 100)
    files = fetch_files("tiny-test/1.2", progress=False)
    assert (files["package"] / "weights.pt").read_bytes() == b"v12" * 100
    # a package whose file does not match the rdf's sha256
    bioimageio_model(srv, "/bioimage-io/artifacts/tiny-bad/files", b"good" * 10)
    srv.files["/bioimage-io/artifacts/tiny-bad/files/weights.pt"] = b"evil" * 10
    with pytest.raises(HashMismatchError, match="sha256"):
        fetch("tiny-bad", progress=False)
    with pytest.raises(OfflineError):
        fetch("tiny-bad", offline=True)


def test_bioimageio_unknown_id_and_offline(bioimageio_server):
    with pytest.raises(ModelNotFoundError, match="could not resolve bioimage.io resource 'samzoo-lm-tinyy'.*"
                                                 "did you mean the samzoo model 'samzoo-lm-tiny'"):
        fetch("samzoo-lm-tinyy", progress=False)
    assert bioimageio_server.hits("/bioimage-io/artifacts/samzoo-lm-tinyy/files/rdf.yaml") == 1
    n = bioimageio_server.total_requests
    with pytest.raises(OfflineError, match="samzoo fetch affable-shark"):
        fetch("affable-shark", offline=True)
    assert bioimageio_server.total_requests == n


def test_rdf_url_is_a_package(hub_env, server):
    bioimageio_model(server, "/pkgs/mine", b"w" * 64)
    files = fetch_files(server.url("/pkgs/mine/rdf.yaml"), progress=False)
    assert (files["package"] / "weights.pt").read_bytes() == b"w" * 64
    assert hashlib.sha256((files["package"] / "weights.pt").read_bytes()).hexdigest()
