"""Cards travel with packages, safely: ``samzoo package --card`` embeds the card (and its cover) in
every package, ``samzoo publish PACKAGE`` then needs no ``--card``, and files a card names must lie
inside the card's folder (or the package) -- a card cannot make ``samzoo publish`` upload
``/any/local/file``."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

import samzoo  # noqa: F401  (torchvision fix first)
from samzoo import SamzooModel, preset, save_checkpoint
from samzoo.cli import main as cli_main
from samzoo.errors import CardError
from samzoo.packaging.samples import synthetic_sample
from samzoo.publishing.card import load_card

os.environ.setdefault("BIOIMAGEIO_LOG_WARNINGS", "false")

CARD = {
    "id": "card-travel-test", "name": "card travel test", "version": "1.0.0", "license": "MIT",
    "description": "A random-init model for the card-in-package tests.", "modality": "light microscopy",
    "architecture": {"type": "sam", "encoder": "vit (test preset)", "decoder": "unetr"},
    "authors": [{"name": "Ada Lovelace"}], "tags": ["segment-anything", "test"],
    "training_data": {"description": "none (random init)"}, "intended_use": "tests",
    "limitations": ["random weights"], "cover": "pics/cover.png",
    "citations": [
        {"text": "Archit et al. Segment Anything for Microscopy. Nature Methods (2025)",
         "doi": "10.1038/s41592-024-02580-4"},
        {"text": "Kirillov et al. Segment Anything. ICCV (2023)", "doi": "10.1109/ICCV51070.2023.00371"},
    ],
}
COVER = b"\x89PNG\r\n\x1a\n the card's cover"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _write_card(folder: Path, **changes) -> Path:
    (folder / "pics").mkdir(parents=True, exist_ok=True)
    (folder / "pics" / "cover.png").write_bytes(COVER)
    path = folder / "card.yaml"
    path.write_text(yaml.safe_dump({**CARD, **changes}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """``samzoo package --card`` through the CLI, on a small random model."""
    from samzoo.families.microsam.packaging.weights import normalized_input

    tmp = tmp_path_factory.mktemp("cardpkg")
    image, _ = synthetic_sample(96, seed=4)
    torch.manual_seed(0)
    model = SamzooModel(preset("test"))
    with torch.no_grad():
        maps = model.eval()(normalized_input(model, image[..., None]))[0].numpy()
    q = lambda a, p: float(np.clip(np.quantile(a, p), 0.01, 1.0))  # noqa: E731
    model.ais_params = {"foreground_threshold": q(maps[0], 0.4), "center_distance_threshold": q(maps[1], 0.35),
                        "boundary_distance_threshold": q(maps[2], 0.35), "min_size": 4}
    ckpt = save_checkpoint(model, tmp / "model.pt")
    tifffile.imwrite(tmp / "sample.tif", image)
    card = _write_card(tmp / "card")
    code = cli_main(["package", str(ckpt), "-o", str(tmp / "out"), "--card", str(card), "--kinds", "ais,interactive",
                     "--formats", "pytorch_state_dict", "--sample-image", str(tmp / "sample.tif")])
    assert code == 0
    return {kind: tmp / "out" / f"card-travel-test.{kind}.zip" for kind in ("ais", "interactive")}, tmp


def test_every_package_carries_the_card_and_its_cover(packaged):
    zips, _ = packaged
    for path in zips.values():
        with zipfile.ZipFile(path) as zf:
            rdf = yaml.safe_load(zf.read("rdf.yaml"))
            card = yaml.safe_load(zf.read("samzoo_card.yaml"))
            cover = zf.read("samzoo_card_cover.png")
            attached = {a["source"]: a["sha256"] for a in rdf["attachments"]}
            assert attached == {name: hashlib.sha256(zf.read(name)).hexdigest()
                                for name in ("samzoo_card.yaml", "samzoo_card_cover.png")}
        assert cover == COVER and card["cover"] == "samzoo_card_cover.png"
        assert {k: card[k] for k in ("id", "name", "version", "authors")} == \
            {k: CARD[k] for k in ("id", "name", "version", "authors")}


def test_publish_without_card_uses_the_embedded_one(packaged, capsys, monkeypatch, tmp_path):
    zips, _ = packaged
    monkeypatch.setenv("SAMZOO_ZENODO_URL", "http://127.0.0.1:9")  # a dry run touches no network
    code, out, err = _cli(capsys, "publish", zips["ais"], zips["interactive"], "--to", "zenodo", "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    files = {f["name"]: f for f in plan["files"]}
    assert plan["version"] == "1.0.0" and plan["card"] == "card-travel-test"
    assert files["samzoo_card_cover.png"]["sha256"] == hashlib.sha256(COVER).hexdigest()
    assert {"samzoo_card.yaml", "README.md", zips["ais"].name, zips["interactive"].name} <= set(files)
    code, out, err = _cli(capsys, "publish", zips["ais"], "--to", "hf", "lab/cards", "--dry-run")
    assert code == 0, err


def _repacked(src: Path, dst: Path, card: dict) -> Path:
    """``src`` with another embedded card, its sha256 re-pinned in rdf.yaml (so only the card is wrong)."""
    data = yaml.safe_dump(card).encode()
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    rdf = yaml.safe_load(members["rdf.yaml"])
    for att in rdf["attachments"]:
        if att["source"] == "samzoo_card.yaml":
            att["sha256"] = hashlib.sha256(data).hexdigest()
    members["samzoo_card.yaml"] = data
    members["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return dst


@pytest.mark.parametrize("cover", ["/etc/hostname", "../../model.pt", "C:\\secret.png"])
def test_embedded_card_cannot_name_files_outside_the_package(packaged, capsys, tmp_path, cover):
    zips, tmp = packaged
    card = yaml.safe_load(zipfile.ZipFile(zips["ais"]).read("samzoo_card.yaml"))
    bad = _repacked(zips["ais"], tmp_path / "evil.zip", {**card, "cover": cover})
    code, out, err = _cli(capsys, "publish", bad, "--to", "zenodo", "--dry-run")
    assert code == 2 and f"cover {cover!r}" in err and out == ""
    assert len(err.strip().splitlines()) == 1


def test_changed_embedded_card_fails_the_hash_check(packaged, capsys, tmp_path):
    zips, _ = packaged
    with zipfile.ZipFile(zips["ais"]) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["samzoo_card.yaml"] += b"\nlinks: [https://example.org]\n"
    with zipfile.ZipFile(tmp_path / "changed.zip", "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    code, out, err = _cli(capsys, "publish", tmp_path / "changed.zip", "--to", "zenodo", "--dry-run")
    assert code == 2 and "samzoo_card.yaml does not match the sha256" in err and out == ""


def test_card_files_must_lie_in_the_cards_folder(tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"secret")
    folder = tmp_path / "cards"
    for cover, why in ((str(outside), "must be a path relative"), ("../secret.png", "must lie inside")):
        with pytest.raises(CardError, match=why):
            load_card(_write_card(folder, cover=cover))
    (folder / "link.png").symlink_to(outside)
    with pytest.raises(CardError, match="outside the card's folder"):
        load_card(_write_card(folder, cover="link.png"))
    assert load_card(_write_card(folder)).cover_path == folder / "pics" / "cover.png"


def test_package_with_a_card_naming_an_outside_cover_writes_nothing(packaged, capsys, tmp_path):
    _, tmp = packaged
    card = _write_card(tmp_path / "c", cover="/etc/hostname")
    code, _, err = _cli(capsys, "package", tmp / "model.pt", "-o", tmp_path / "out", "--card", card,
                        "--formats", "pytorch_state_dict", "--kinds", "ais")
    assert code == 2 and "cover '/etc/hostname' must be a path relative" in err
    assert not any((tmp_path / "out").glob("*.zip"))
