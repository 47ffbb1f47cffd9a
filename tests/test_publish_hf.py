"""`samzoo publish --to hf`, with huggingface_hub's real client against tests/hf_endpoint.py (127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import yaml
from _hub_servers import minimal_package

from samzoo.publishing.card import MUSAM_DOI, validate_card
from samzoo.publishing.cli import main as cli_main
from samzoo.publishing.huggingface import hf_front_matter
from hf_endpoint import HfEndpoint

CARD = {
    "name": "Test cells model",
    "description": "A tiny model fine-tuned for tests.",
    "version": "1.0.0",
    "license": "CC-BY-4.0",
    "modality": "phase contrast microscopy",
    "architecture": {"encoder": "vit_b", "decoder": "unetr"},
    "parent_model": "vit_b_lm",
    "base_model": "facebook/sam-vit-base",
    "authors": [{"name": "Ada Lovelace"}],
    "citations": [
        {"text": "Archit et al. Segment Anything for Microscopy. 2025", "doi": MUSAM_DOI},
        {"text": "Kirillov et al. Segment Anything. 2023", "url": "https://arxiv.org/abs/2304.02643"},
    ],
    "tags": ["cells"],
    "training_data": {"description": "Synthetic cells."},
    "intended_use": "Tests.",
    "limitations": ["Toy model."],
}


def write_package(path: Path, payload: str) -> Path:
    """A minimal valid BioImage.IO package (publishing checks descriptions and hashes first)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in minimal_package(payload.encode() * 300, name=payload).items():
            archive.writestr(name, data)
    return path


def write_card(folder: Path, **changes) -> Path:
    path = folder / "card.yaml"
    path.write_text(yaml.safe_dump(dict(CARD, **changes), allow_unicode=True), encoding="utf-8")
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checkpoint(path: Path, name: str) -> bytes:
    """A real (tiny) samzoo checkpoint: publish checks that checkpoints load before uploading."""
    import torch

    from samzoo import SamzooModel, preset, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(SamzooModel(preset("test"), metadata={"name": name}), path)
    return path.read_bytes()


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    write_package(folder / "cells.zip", "cells")
    write_checkpoint(folder / "cells.pt", "cells")
    write_card(folder)
    return folder


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HfEndpoint() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint.url)
        monkeypatch.setenv("HF_TOKEN", "hf_write")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved token, own cache
        monkeypatch.setenv("SAMZOO_PUBLISH_RETRIES", "3")
        monkeypatch.setenv("SAMZOO_PUBLISH_BACKOFF", "0.01")
        yield endpoint


def publish(capsys, work: Path, repo: str = "lab/cells", *extra: str, package: str = "cells.zip"):
    argv = ["publish", str(work / package), "--to", "hf", repo, "--checkpoint", str(work / "cells.pt"),
            "--card", str(work / "card.yaml"), *extra]
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def download(hub: HfEndpoint, tmp_path: Path, filename: str, revision: str, token: str | None = "hf_write") -> bytes:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download("lab/cells", filename, revision=revision, endpoint=hub.url, token=token,
                           cache_dir=tmp_path / "dl-cache")
    return Path(path).read_bytes()


def test_publish_creates_repo_uploads_and_tags(work, hub, tmp_path, capsys):
    code, out, err = publish(capsys, work, "lab/cells", "--private")
    assert code == 0, err
    assert "Published: lab/cells@v1.0.0" in out
    assert f"Load it with: HF_ENDPOINT={hub.url} samzoo fetch hf://lab/cells@v1.0.0" in out
    assert "hf_write" not in out + err

    repo = hub.repos["lab/cells"]
    assert repo["private"] is True
    assert set(repo["tags"]) == {"v1.0.0"}
    files = hub.commits[repo["tags"]["v1.0.0"]]["files"]
    assert set(files) == {".gitattributes", "cells.zip", "cells.pt", "README.md", "samzoo_card.yaml"}

    # the tag loads exactly the published files, through huggingface_hub's download path
    assert download(hub, tmp_path, "cells.pt", "v1.0.0") == (work / "cells.pt").read_bytes()
    assert download(hub, tmp_path, "cells.zip", "v1.0.0") == (work / "cells.zip").read_bytes()
    readme = download(hub, tmp_path, "README.md", "v1.0.0").decode()
    header = yaml.safe_load(readme.split("---\n")[1])
    assert header == {
        "license": "cc-by-4.0",
        "library_name": "samzoo",
        "pipeline_tag": "image-segmentation",
        "tags": ["cells", "samzoo", "bioimage.io", "microscopy"],
        "base_model": "facebook/sam-vit-base",
    }
    assert "# Test cells model" in readme and "samzoo fetch hf://lab/cells@v1.0.0" in readme

    # private: no token, no files
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        download(hub, tmp_path / "anon", "cells.pt", "v1.0.0", token=False)

    # model_info reads the README header back
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub.url, token="hf_write").model_info("lab/cells", revision="v1.0.0")
    assert info.library_name == "samzoo" and info.pipeline_tag == "image-segmentation"


def test_republishing_the_same_version_is_a_no_op(work, hub, capsys):
    assert publish(capsys, work)[0] == 0
    commits = hub.count("POST", "/commit/")
    code, out, err = publish(capsys, work)
    assert code == 0, err
    assert out.startswith("Already published: lab/cells@v1.0.0")
    assert hub.count("POST", "/commit/") == commits


def test_new_version_gets_its_own_tag_and_drops_old_model_files(work, hub, tmp_path, capsys):
    first = (work / "cells.pt").read_bytes()
    assert publish(capsys, work)[0] == 0
    write_package(work / "cells-v2.zip", "cells v2")
    second = write_checkpoint(work / "cells.pt", "cells v2")
    write_card(work, version="1.1.0")
    code, out, err = publish(capsys, work, package="cells-v2.zip")
    assert code == 0, err
    assert "removing cells.zip from main" in err
    repo = hub.repos["lab/cells"]
    v1 = hub.commits[repo["tags"]["v1.0.0"]]["files"]
    v2 = hub.commits[repo["tags"]["v1.1.0"]]["files"]
    assert "cells.zip" in v1 and "cells-v2.zip" not in v1
    assert "cells-v2.zip" in v2 and "cells.zip" not in v2
    assert download(hub, tmp_path, "cells.pt", "v1.1.0") == second
    assert download(hub, tmp_path, "cells.pt", "v1.0.0") == first
    assert repo["tags"]["v1.1.0"] == repo["branches"]["main"]


def test_same_version_with_other_files_is_refused(work, hub, capsys):
    assert publish(capsys, work)[0] == 0
    write_checkpoint(work / "cells.pt", "different")
    code, _, err = publish(capsys, work)
    assert code == 2
    assert "lab/cells@v1.0.0 already exists with other files (cells.pt differ)" in err
    assert "raise `version` in the model card" in err


def test_rejected_and_read_only_tokens(work, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    code, _, err = publish(capsys, work)
    assert code == 2
    assert "HF_TOKEN rejected (HTTP 401" in err and f"{hub.url}/settings/tokens" in err
    assert "hf_not_a_real_token" not in err
    assert hub.count("POST", "/api/repos/create") == 1  # no retries on 401
    monkeypatch.setenv("HF_TOKEN", "hf_read")
    code, _, err = publish(capsys, work)
    assert code == 2 and "HTTP 403" in err and "write access" in err


def test_server_errors_are_retried(work, hub, capsys):
    hub.fail("POST", r"/commit/main$", 503, times=1)
    hub.fail("POST", r"/tag/", 500, times=2)
    code, out, err = publish(capsys, work)
    assert code == 0, err
    assert hub.count("POST", r"/commit/main$") == 2
    assert hub.count("POST", r"/tag/") == 3
    assert set(hub.repos["lab/cells"]["tags"]) == {"v1.0.0"}


def test_persistent_server_errors_stop_with_advice(work, hub, capsys):
    hub.fail("POST", r"/commit/main$", 502, times=3)
    code, _, err = publish(capsys, work)
    assert code == 2
    assert "uploading the files failed 3 times on Hugging Face" in err and "run the same command again" in err
    assert hub.repos["lab/cells"]["tags"] == {}
    code, out, _ = publish(capsys, work)
    assert code == 0 and "Published" in out


def test_dry_run_touches_no_network(work, hub, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    code, out, err = publish(capsys, work, "lab/cells", "--dry-run", "--private")
    assert code == 0, err
    plan = json.loads(out)
    assert hub.requests == []
    assert plan["tag"] == "v1.0.0" and plan["private"] is True and plan["endpoint"] == hub.url
    files = {f["name"]: f for f in plan["files"]}
    assert files["cells.pt"]["sha256"] == sha256((work / "cells.pt").read_bytes())
    assert plan["readme_front_matter"]["library_name"] == "samzoo"


def test_bad_repo_id_and_missing_token(work, hub, monkeypatch, capsys):
    code, _, err = publish(capsys, work, "no-slash")
    assert code == 2 and "not a Hugging Face repository id" in err
    assert cli_main(["publish", str(work / "cells.zip"), "--to", "hf"]) == 2
    assert "--to hf needs the repository" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    code, _, err = publish(capsys, work)
    assert code == 2 and "HF_TOKEN is not set" in err
    assert hub.requests == []


def test_front_matter_licenses():
    card = validate_card(dict(CARD, license="GPL-3.0-or-later", base_model=None))
    assert hf_front_matter(card)["license"] == "gpl-3.0" and "base_model" not in hf_front_matter(card)
    odd = hf_front_matter(validate_card(dict(CARD, license="Zlib")))
    assert odd["license"] == "zlib"
    other = hf_front_matter(validate_card(dict(CARD, license="EUPL-1.2")))
    assert other["license"] == "eupl-1.2"
    rare = hf_front_matter(validate_card(dict(CARD, license="BSD-4-Clause")))
    assert rare == {**rare, "license": "other", "license_name": "bsd-4-clause",
                    "license_link": "https://spdx.org/licenses/BSD-4-Clause.html"}


def test_printed_line_loads_the_tag_through_samzoo_hub(work, hub, tmp_path, monkeypatch, capsys):
    samzoo_hub = pytest.importorskip("samzoo.hub")
    if getattr(samzoo_hub, "fetch_files", None) is None:
        pytest.skip("samzoo.hub.fetch_files is not available yet")
    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = publish(capsys, work)
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("Load it with: "))
    env, *command = line[len("Load it with: "):].split()
    assert env == f"HF_ENDPOINT={hub.url}" and command[:2] == ["samzoo", "fetch"]
    files = samzoo_hub.fetch_files(command[2], progress=False)
    assert sha256(Path(files["checkpoint"]).read_bytes()) == sha256((work / "cells.pt").read_bytes())
    assert sha256(Path(files["package"]).read_bytes()) == sha256((work / "cells.zip").read_bytes())
