"""`samzoo publish --to zenodo`, end to end against zenodo-mock (a subprocess on 127.0.0.1).

Every test talks real HTTP: samzoo -> ZenodoProxy (token check, md5 checksums as Zenodo reports
them, injected faults, request log) -> zenodo-mock. See tests/zenodo_proxy.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import urllib.request
import zipfile

import torch

from samzoo import SamzooModel, preset, save_checkpoint
from pathlib import Path

import pytest
import yaml
from _hub_servers import minimal_package

from samzoo.errors import PublishError
from samzoo.publishing._http import RetryPolicy
from samzoo.publishing.card import MUSAM_DOI, validate_card
from samzoo.publishing.cli import main as cli_main
from samzoo.publishing.state import STATE_FILENAME
from samzoo.publishing.zenodo import (
    SANDBOX_URL,
    creator_name,
    fetch_command,
    parse_record_id,
    validate_zenodo_metadata,
    zenodo_metadata,
)
from zenodo_proxy import ZenodoProxy, zenodo_mock

TOKEN = "good-token"
CARD = {
    "name": "Test nuclei model",
    "description": "A tiny model fine-tuned for tests.",
    "version": "1.0.0",
    "license": "MIT",
    "modality": "fluorescence microscopy",
    "architecture": {"encoder": "vit_t", "decoder": "unetr"},
    "parent_model": {"id": "vit_b_lm", "doi": "10.5281/zenodo.11103797"},
    "authors": [
        {"name": "Ada Lovelace", "affiliation": "Analytical Engines", "orcid": "0000-0002-1694-233X"},
        {"name": "Hopper, Grace"},
    ],
    "citations": [
        {"text": "Archit et al. Segment Anything for Microscopy. 2025", "doi": MUSAM_DOI},
        {"text": "Kirillov et al. Segment Anything. 2023", "url": "https://arxiv.org/abs/2304.02643"},
    ],
    "tags": ["nuclei", "test"],
    "training_data": {"description": "Synthetic nuclei."},
    "intended_use": "Tests.",
    "limitations": ["Toy model."],
    "cover": "cover.png",
}


def write_package(path: Path, payload: str) -> Path:
    """A minimal valid BioImage.IO package (publishing checks descriptions and hashes first)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in minimal_package(payload.encode() * 200, name=payload).items():
            archive.writestr(name, data)
    return path


def write_card(folder: Path, **changes) -> Path:
    data = dict(CARD, **changes)
    path = folder / "card.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    (folder / "cover.png").write_bytes(b"\x89PNG cover")
    return path


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    write_package(folder / "nuclei.zip", "nuclei")
    write_package(folder / "nuclei-3d.zip", "nuclei-3d")
    torch.manual_seed(0)  # a real checkpoint: publish checks that it loads before any request
    save_checkpoint(SamzooModel(preset("test"), metadata={"name": "nuclei"}), folder / "nuclei.pt")
    write_card(folder)
    return folder


@pytest.fixture
def mock(tmp_path):
    with zenodo_mock(tmp_path) as url:
        yield url


@pytest.fixture
def proxy(mock, monkeypatch):
    with ZenodoProxy(mock, token=TOKEN) as p:
        monkeypatch.setenv("SAMZOO_ZENODO_URL", p.url)
        monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
        monkeypatch.setenv("SAMZOO_PUBLISH_RETRIES", "3")
        monkeypatch.setenv("SAMZOO_PUBLISH_BACKOFF", "0.01")
        yield p


def publish(capsys, work: Path, *extra: str, packages=("nuclei.zip", "nuclei-3d.zip")):
    argv = ["publish", *[str(work / p) for p in packages], "--to", "zenodo", "--checkpoint", str(work / "nuclei.pt"),
            "--card", str(work / "card.yaml"), *extra]
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def doi_of(out: str) -> str:
    match = re.search(r"DOI (10\.\d+/zenodo\.\d+)", out)
    assert match, out
    return match.group(1)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_publish_sets_metadata_uploads_files_and_is_idempotent(work, proxy, capsys):
    code, out, err = publish(capsys, work)
    assert code == 0, err
    doi = doi_of(out)
    record_id = parse_record_id(doi)
    # zenodo-mock mints sandbox-style DOIs (10.5072/...); the resolver takes them with SAMZOO_ZENODO_URL
    assert f"Load it with: SAMZOO_ZENODO_URL={proxy.url} samzoo fetch {doi}" in out
    assert TOKEN not in out + err

    record = get_json(f"{proxy.url}/api/records/{record_id}")
    meta = record["metadata"]
    assert meta["upload_type"] == "other"
    assert meta["title"] == "Test nuclei model"
    assert meta["version"] == "1.0.0"
    assert meta["license"] == "mit"
    assert meta["access_right"] == "open"
    assert meta["creators"] == [
        {"name": "Lovelace, Ada", "affiliation": "Analytical Engines", "orcid": "0000-0002-1694-233X"},
        {"name": "Hopper, Grace"},
    ]
    assert {"identifier": "10.5281/zenodo.11103797", "relation": "isDerivedFrom"} in meta["related_identifiers"]
    assert {"identifier": MUSAM_DOI, "relation": "cites"} in meta["related_identifiers"]
    assert {"identifier": "arXiv:2304.02643", "relation": "cites"} in meta["related_identifiers"]
    assert {"nuclei", "bioimage.io", "bioimage.io:model"} <= set(meta["keywords"])
    assert f"samzoo fetch {doi}" in meta["description"]  # reserved before publishing
    assert validate_zenodo_metadata({k: v for k, v in meta.items() if k != "doi"}) == []

    names = {f["key"]: f for f in record["files"]}
    assert set(names) == {"nuclei.zip", "nuclei-3d.zip", "nuclei.pt", "README.md", "cover.png", "samzoo_card.yaml"}
    for name in ("nuclei.zip", "nuclei-3d.zip", "nuclei.pt", "cover.png"):
        data = get_bytes(names[name]["links"]["self"])
        assert sha256(data) == sha256((work / name).read_bytes())
        assert names[name]["checksum"] == "md5:" + hashlib.md5(data).hexdigest()
    readme = get_bytes(names["README.md"]["links"]["self"]).decode()
    assert readme.startswith("# Test nuclei model") and "![Test nuclei model](cover.png)" in readme
    assert yaml.safe_load(get_bytes(names["samzoo_card.yaml"]["links"]["self"]))["version"] == "1.0.0"

    state = json.loads((work / STATE_FILENAME).read_text())
    (entry,) = state["publications"].values()
    assert entry["status"] == "published" and entry["doi"] == doi

    # the same command again: nothing new on the server
    before = len(proxy.requests)
    code, out2, _ = publish(capsys, work)
    assert code == 0 and out2.startswith(f"Already published: DOI {doi}")
    assert len(proxy.requests) == before


def test_resume_after_upload_failure_continues_the_same_draft(work, proxy, capsys):
    proxy.fail("PUT", r"^/api/files/\d+/nuclei-3d\.zip$", 500, times=3)  # all 3 tries of file 2 fail
    code, out, err = publish(capsys, work)
    assert code == 2 and out == ""
    assert "uploading nuclei-3d.zip failed 3 times on Zenodo" in err and "(last: HTTP 500)" in err
    assert "run the same command again to continue draft 1000" in err
    state = json.loads((work / STATE_FILENAME).read_text())
    (entry,) = state["publications"].values()
    assert entry["status"] == "draft" and entry["deposition_id"] == 1000
    assert proxy.count("PUT", "nuclei.zip$") == 1

    code, out, err = publish(capsys, work)
    assert code == 0, err
    assert "continuing draft 1000" in err
    assert "nuclei.zip is already uploaded (md5" in err
    assert doi_of(out).endswith("zenodo.1000")
    assert proxy.count("POST", r"^/api/deposit/depositions$") == 1  # one deposition only
    assert proxy.count("PUT", "nuclei.zip$") == 1  # verified by checksum, not uploaded again
    assert proxy.count("PUT", "nuclei-3d.zip$") == 4  # 3 failures + 1
    record = get_json(f"{proxy.url}/api/records/1000")
    assert len(record["files"]) == 6


def test_resume_reuploads_files_the_server_cannot_verify(work, mock, monkeypatch, capsys):
    with ZenodoProxy(mock, token=TOKEN, checksums=False) as bare:  # answers like the bare mock: no checksums
        monkeypatch.setenv("SAMZOO_ZENODO_URL", bare.url)
        monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
        monkeypatch.setenv("SAMZOO_PUBLISH_RETRIES", "1")
        bare.fail("PUT", r"nuclei\.pt$", "reset", times=1)
        code, _, err = publish(capsys, work)
        assert code == 2 and "uploading nuclei.pt failed 1 time on Zenodo" in err, err
        assert any(e in err for e in ("ConnectionResetError", "RemoteDisconnected", "BrokenPipeError")), err
        code, out, err = publish(capsys, work)
        assert code == 0, err
        assert "uploading nuclei.zip again: the server reports no checksum" in err
        assert bare.count("PUT", "nuclei.zip$") == 2
        assert bare.count("POST", r"^/api/deposit/depositions$") == 1


def test_transient_failures_are_retried(work, proxy, capsys):
    proxy.fail("PUT", r"nuclei\.pt$", "reset", times=1)
    proxy.fail("POST", r"/actions/publish$", 503, times=1)
    proxy.fail("PUT", r"^/api/deposit/depositions/\d+$", 502, times=2)
    code, out, err = publish(capsys, work)
    assert code == 0, err
    assert proxy.count("PUT", r"nuclei\.pt$") == 2
    assert proxy.count("POST", "/actions/publish$") == 2
    assert "retrying in" in err


def test_lost_publish_answer_is_not_a_failure(work, proxy, capsys):
    proxy.fail("POST", r"/actions/publish$", 400, forward=True)  # published, but the answer says otherwise
    code, out, err = publish(capsys, work)
    assert code == 0, err
    assert doi_of(out).endswith("zenodo.1000")
    # a crash right after publishing (state still says draft): the next run finds the record
    state_path = work / STATE_FILENAME
    state = json.loads(state_path.read_text())
    (key,) = state["publications"]
    state["publications"][key]["status"] = "draft"
    state_path.write_text(json.dumps(state))
    code, out, err = publish(capsys, work)
    assert code == 0 and doi_of(out).endswith("zenodo.1000")
    assert proxy.count("POST", r"^/api/deposit/depositions$") == 1
    assert proxy.count("POST", r"/actions/publish$") == 1


def test_checksum_mismatch_uploads_again(work, proxy, capsys):
    proxy.wrong_checksum("nuclei.zip")
    code, out, err = publish(capsys, work)
    assert code == 0, err
    assert "checksum mismatch for nuclei.zip" in err
    assert proxy.count("PUT", "nuclei.zip$") == 2


def test_new_version_replaces_inherited_files(work, proxy, capsys):
    code, out, _ = publish(capsys, work)
    first = doi_of(out)
    write_package(work / "nuclei-v2.zip", "nuclei v2")
    write_card(work, version="1.1.0")
    code, out, err = publish(capsys, work, "--new-version-of", first, packages=("nuclei-v2.zip",))
    assert code == 0, err
    second = doi_of(out)
    assert second != first
    assert "removing nuclei.zip inherited from the previous version" in err
    new = get_json(f"{proxy.url}/api/records/{parse_record_id(second)}")
    assert {f["key"] for f in new["files"]} == {"nuclei-v2.zip", "nuclei.pt", "README.md", "cover.png", "samzoo_card.yaml"}
    assert new["metadata"]["version"] == "1.1.0"
    old = get_json(f"{proxy.url}/api/records/{parse_record_id(first)}")
    assert "nuclei.zip" in {f["key"] for f in old["files"]}
    assert proxy.count("POST", r"/actions/newversion$") == 1


def test_changed_files_after_publishing_point_to_new_version(work, proxy, capsys):
    code, out, _ = publish(capsys, work)
    doi = doi_of(out)
    write_package(work / "nuclei.zip", "changed")
    code, out, err = publish(capsys, work)
    assert code == 2
    assert f"--new-version-of {doi}" in err


def test_rejected_token_explains_what_to_do(work, proxy, monkeypatch, capsys):
    monkeypatch.setenv("ZENODO_TOKEN", "wrong-token-123")
    proxy.echo_auth = True
    code, out, err = publish(capsys, work)
    assert code == 2
    assert "ZENODO_TOKEN rejected" in err and "deposit:write and deposit:actions" in err
    assert f"{proxy.url}/account/settings/applications" in err
    assert "wrong-token-123" not in err
    assert len(proxy.requests) == 1  # no retries on 401


def test_token_is_redacted_from_server_messages(work, proxy, capsys):
    proxy.echo_auth = True
    proxy.fail("POST", r"^/api/deposit/depositions$", 400)
    code, _, err = publish(capsys, work)
    assert code == 2 and "Zenodo rejected creating a deposition (HTTP 400)" in err
    assert "Bearer ***" in err and TOKEN not in err


def test_server_validation_errors_are_listed(work, proxy, capsys):
    proxy.reject_metadata([{"field": "metadata.creators.0.orcid", "message": "Not a valid ORCID identifier."}])
    code, _, err = publish(capsys, work)
    assert code == 2
    assert "Zenodo rejected setting the metadata (HTTP 400): Validation error: metadata.creators.0.orcid: Not a valid ORCID identifier." in err


def test_unprocessable_entity_stops_without_retry(work, proxy, capsys):
    proxy.fail("POST", r"/actions/publish$", 422, times=5)
    code, _, err = publish(capsys, work)
    assert code == 2 and "(HTTP 422)" in err and "Fix the model card" in err
    assert proxy.count("POST", "/actions/publish$") == 1


def test_metadata_is_validated_before_any_request(work, proxy, capsys):
    write_card(work, authors=[{"name": "samzoo developers"}, {"name": "Hopper"}])
    code, _, err = publish(capsys, work)
    assert code == 2
    assert "creators[0] name 'samzoo developers' is not 'Family, Given'" in err
    assert "creators[1] name 'Hopper' is not 'Family, Given'" in err
    assert proxy.requests == []


def test_dry_run_touches_no_network(work, proxy, monkeypatch, capsys):
    monkeypatch.delenv("ZENODO_TOKEN")
    code, out, err = publish(capsys, work, "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert proxy.requests == []
    files = {f["name"]: f for f in plan["files"]}
    assert files["nuclei.pt"]["sha256"] == sha256((work / "nuclei.pt").read_bytes())
    assert files["nuclei.pt"]["size"] == (work / "nuclei.pt").stat().st_size
    assert set(files) == {"nuclei.zip", "nuclei-3d.zip", "nuclei.pt", "README.md", "cover.png", "samzoo_card.yaml"}
    assert plan["metadata"]["title"] == "Test nuclei model" and plan["base_url"] == proxy.url
    assert not (work / STATE_FILENAME).exists()

    # no server at all, and --sandbox picks the sandbox
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("SAMZOO_ZENODO_URL", f"http://127.0.0.1:{s.getsockname()[1]}")
    code, out, _ = publish(capsys, work, "--dry-run", "--sandbox")
    assert code == 0 and json.loads(out)["base_url"] == SANDBOX_URL


def test_card_inside_the_package_is_used(work, proxy, capsys):
    with zipfile.ZipFile(work / "nuclei.zip", "a") as archive:
        archive.write(work / "card.yaml", "samzoo_card.yaml")
        archive.write(work / "cover.png", "cover.png")
    code = cli_main(["publish", str(work / "nuclei.zip"), "--to", "zenodo", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    plan = json.loads(out)
    assert plan["version"] == "1.0.0" and {"README.md", "cover.png", "samzoo_card.yaml"} <= {f["name"] for f in plan["files"]}


def test_missing_token_and_bad_arguments(work, proxy, monkeypatch, capsys):
    monkeypatch.delenv("ZENODO_TOKEN")
    code, _, err = publish(capsys, work)
    assert code == 2 and "ZENODO_TOKEN is not set" in err
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    code, _, err = publish(capsys, work, "--new-version-of", "not-a-doi")
    assert code == 2 and "is not a Zenodo DOI" in err
    assert cli_main(["publish", str(work / "card.yaml"), "--to", "zenodo"]) == 2
    assert "is not a zip file" in capsys.readouterr().err
    assert proxy.requests == []


def test_fetch_published_record_through_samzoo_hub(work, proxy, tmp_path, monkeypatch, capsys):
    hub = pytest.importorskip("samzoo.hub")
    fetch = getattr(hub, "fetch", None)
    if fetch is None:
        pytest.skip("samzoo.hub.fetch is not available yet")
    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = publish(capsys, work, packages=("nuclei.zip",))
    # run exactly the printed line: "Load it with: SAMZOO_ZENODO_URL=<base> samzoo fetch <reference>"
    line = next(x for x in out.splitlines() if x.startswith("Load it with: "))
    env, *command = line[len("Load it with: "):].split()
    assert command[:2] == ["samzoo", "fetch"] and len(command) == 3
    assert command[2].startswith("10.5072/zenodo.")  # by DOI, through the resolver
    monkeypatch.setenv(*env.split("=", 1))
    path = Path(fetch(command[2]))
    assert sha256(path.read_bytes()) == sha256((work / "nuclei.pt").read_bytes())
    files = hub.fetch_files(command[2])
    assert sha256(Path(files["package"]).read_bytes()) == sha256((work / "nuclei.zip").read_bytes())


# ------------------------------------------------------------------------------- unit level


def test_zenodo_metadata_rules():
    good = zenodo_metadata(validate_card(dict(CARD, cover=None)))
    assert validate_zenodo_metadata(good) == []
    bad = dict(
        good,
        upload_type="model",
        license="not-a-license",
        creators=[{"name": "Lovelace Ada", "orcid": "0000-0002-1694-2331"}],
        related_identifiers=[{"identifier": "vit_b", "relation": "derivesFrom"}],
        publication_date="21.11.2026",
        surprise=1,
    )
    problems = " | ".join(validate_zenodo_metadata(bad))
    for needle in (
        "upload_type 'model'",
        "license 'not-a-license'",
        "'Family, Given'",
        "orcid '0000-0002-1694-2331'",
        "relation 'derivesFrom'",
        "identifier 'vit_b'",
        "publication_date",
        "unknown metadata fields ['surprise']",
    ):
        assert needle in problems
    assert "embargo_date is required" in " ".join(validate_zenodo_metadata(dict(good, access_right="embargoed")))
    assert "image_type is required" in " ".join(validate_zenodo_metadata(dict(good, upload_type="image")))
    assert "title is required" in " ".join(validate_zenodo_metadata(dict(good, title="")))


def test_helpers():
    assert creator_name("Ada Lovelace") == "Lovelace, Ada"
    assert creator_name("Hopper, Grace") == "Hopper, Grace"
    assert creator_name("Ludwig van Beethoven") == "Beethoven, Ludwig van"
    assert creator_name("samzoo developers") == "samzoo developers"  # not a person: refused by validation
    assert fetch_command("10.5281/zenodo.9", "https://zenodo.org", 9) == "samzoo fetch 10.5281/zenodo.9"
    assert fetch_command("10.5072/zenodo.9", SANDBOX_URL, 9) == (
        f"SAMZOO_ZENODO_URL={SANDBOX_URL} samzoo fetch 10.5072/zenodo.9"
    )
    assert parse_record_id("10.5281/zenodo.123") == 123
    assert parse_record_id("https://doi.org/10.5072/zenodo.45") == 45
    assert parse_record_id("https://zenodo.org/records/77") == 77
    with pytest.raises(PublishError):
        parse_record_id("10.1038/s41592-024-02580-4")
    policy = RetryPolicy(tries=4, backoff=0.5, max_delay=3)
    assert [policy.delay(i) for i in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3]
    assert policy.delay(1, retry_after=2) == 2
