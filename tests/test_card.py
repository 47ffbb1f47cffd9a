"""Model cards: schema validation, the shipped cards, README rendering and `samzoo card`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from samzoo.errors import CardError, SamzooError
from samzoo.publishing.card import (
    MUSAM_DOI,
    REQUIRED_FIELDS,
    SAM_DOI,
    is_valid_orcid,
    load_card,
    render_card,
    validate_card,
    write_readme,
)
from samzoo.publishing.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
SHIPPED = ["samzoo-lm-tiny", "vit_b_lm", "vit_l_lm", "vit_b_em_organelles"]

MINIMAL = {
    "name": "Test model",
    "description": "A model for tests.",
    "version": "1.0.0",
    "license": "MIT",
    "modality": "light microscopy",
    "architecture": {"encoder": "vit_t", "decoder": "unetr"},
    "authors": [{"name": "Ada Lovelace", "orcid": "0000-0002-1694-233X", "github_user": "ada"}],
    "citations": [
        {"text": "Archit et al. Segment Anything for Microscopy. 2025", "doi": MUSAM_DOI},
        {"text": "Kirillov et al. Segment Anything. 2023", "url": "https://arxiv.org/abs/2304.02643"},
    ],
    "tags": ["test"],
    "training_data": {"description": "Synthetic images.", "ids": ["synthetic"], "urls": ["https://example.org/d"]},
    "intended_use": "Tests.",
    "limitations": ["None known.", "Untested on real data."],
}


def card_data(**changes):
    data = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_are_valid_and_render(name):
    card = load_card(CARDS / f"{name}.yaml")
    assert card.id == name
    assert card.tag == f"v{card.version}"
    dois = {c.doi for c in card.citations}
    assert MUSAM_DOI in dois and SAM_DOI in dois
    text = render_card(card)
    for heading in ("## Intended use", "## Training data", "## Metrics", "## Limitations", "## Citation", "```bibtex"):
        assert heading in text
    assert MUSAM_DOI in text


def test_shipped_default_card_carries_the_measured_metrics():
    import samzoo
    from samzoo.default_model import default_checkpoint_path

    card = load_card(CARDS / "samzoo-lm-tiny.yaml")
    assert card.metrics and all(isinstance(m.value, float) for m in card.metrics)
    assert "not measured yet" not in render_card(card)
    measured = samzoo.load_checkpoint(default_checkpoint_path()).metadata["metrics"]["sets"]
    values = {m.value for m in card.metrics}
    for set_name in ("dsb2018-nuclei", "usiigaci-phase"):  # the val-split numbers the card shows
        for key in ("msa", "box_iou"):
            assert round(measured[set_name][key], 3) in values, (set_name, key)


def test_missing_fields_are_all_listed_in_one_error():
    with pytest.raises(CardError) as info:
        validate_card({"name": "only a name"})
    message = str(info.value)
    missing = [f for f in REQUIRED_FIELDS if f != "name"]
    for field in missing:
        assert field in message
    assert info.value.missing == missing
    assert "\n" not in message


def test_empty_values_count_as_missing_and_problems_are_collected():
    data = card_data(description="  ", tags=[], version="1.0", license="Not-A-License")
    data["authors"] = [{"name": "X Y", "orcid": "0000-0002-1694-2330", "github_user": "bad user!"}]
    data["unknown_key"] = 1
    with pytest.raises(CardError) as info:
        validate_card(data)
    err = info.value
    assert err.missing == ["description", "tags"]
    text = str(err)
    for needle in ("version '1.0'", "Not-A-License", "ORCID", "github_user", "unknown fields ['unknown_key']"):
        assert needle in text


def test_citations_must_include_musam_and_sam():
    with pytest.raises(CardError, match="μSAM paper") as info:
        validate_card(card_data(citations=[{"text": "Other paper", "doi": "10.1000/xyz"}]))
    assert "Segment Anything (Kirillov" in str(info.value)
    # SAM by its ICCV DOI instead of arXiv is fine too
    card = validate_card(
        card_data(citations=[{"text": "μSAM", "doi": f"https://doi.org/{MUSAM_DOI}"}, {"text": "SAM", "doi": SAM_DOI}])
    )
    assert card.citations[0].doi == MUSAM_DOI


def test_orcid_checksum():
    assert is_valid_orcid("0000-0002-1694-233X")  # Zenodo's documentation example
    assert is_valid_orcid("0000-0001-5109-3700")  # ORCID's documentation example
    assert not is_valid_orcid("0000-0001-5109-3701")
    assert not is_valid_orcid("0000-0001-5109-370")
    assert not is_valid_orcid("https://orcid.org/0000-0001-5109-3700")


def test_card_round_trips_through_to_dict():
    card = validate_card(card_data(parent_model={"id": "vit_t", "doi": "10.5281/zenodo.1"}, metrics=[{"name": "mSA", "value": 0.5}]))
    again = validate_card(card.to_dict())
    assert again == card
    assert yaml.safe_load(yaml.safe_dump(card.to_dict())) == card.to_dict()


def test_render_sections_metrics_and_cover(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cover.png").write_bytes(b"\x89PNG fake")
    data = card_data(
        cover="pics/cover.png",
        metrics=[{"name": "mSA", "value": 0.61234, "dataset": "LIVECell test"}, {"name": "SA50", "value": None}],
        documentation=[{"title": "Training", "text": "Trained for 10 epochs."}],
        parent_model="hf://org/parent",
        maintainers=[{"name": "Grace Hopper"}],
    )
    card_path = tmp_path / "card.yaml"
    card_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    card = load_card(card_path)
    out = tmp_path / "out" / "README.md"
    written = write_readme(card, out)
    assert written == [out, tmp_path / "out" / "cover.png"]
    assert (tmp_path / "out" / "cover.png").read_bytes() == b"\x89PNG fake"
    text = out.read_text(encoding="utf-8")
    assert "![Test model](cover.png)" in text
    assert "| mSA | 0.6123 | LIVECell test |" in text
    assert "| SA50 | not measured yet |" in text
    assert "## Training\n\nTrained for 10 epochs." in text
    assert "Fine-tuned from | hf://org/parent" in text
    assert "[ORCID 0000-0002-1694-233X](https://orcid.org/0000-0002-1694-233X)" in text
    assert "@misc{archit2025," in text and "@misc{kirillov2023," in text
    assert text.index("## Intended use") < text.index("## Training data") < text.index("## Metrics") < text.index("## Limitations")


def test_missing_cover_is_reported(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card_data(cover="nope.png")), encoding="utf-8")
    with pytest.raises(CardError, match="cover 'nope.png' does not exist"):
        load_card(path)


def test_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(CardError, match="not valid YAML at line"):
        load_card(path)
    with pytest.raises(CardError, match="does not exist"):
        load_card(tmp_path / "nope.yaml")


def test_cli_card_render_and_check(tmp_path, capsys):
    out = tmp_path / "README.md"
    assert cli_main(["card", "render", str(CARDS / "vit_b_lm.yaml"), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("# μSAM light microscopy generalist (ViT-B)")
    assert cli_main(["card", "render", str(CARDS / "vit_b_lm.yaml"), "--front-matter"]) == 0
    printed = capsys.readouterr().out
    assert "library_name: samzoo" in printed and "base_model: facebook/sam-vit-base" in printed
    assert cli_main(["card", "check", *[str(CARDS / f"{n}.yaml") for n in SHIPPED]]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n", encoding="utf-8")
    assert cli_main(["card", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("samzoo: error: model card") and "missing required fields" in err
    assert len(err.strip().splitlines()) == 1


def test_card_error_is_a_samzoo_error():
    assert issubclass(CardError, SamzooError)
