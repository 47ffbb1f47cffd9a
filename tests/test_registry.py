"""The shipped registry, user registries (files, URLs, SAMZOO_REGISTRY) and their validation."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import yaml
from _hub_servers import hub_env, server, write_registry, xxh128  # noqa: F401

from samzoo.errors import ModelNotFoundError, OfflineError, RegistryError
from samzoo.hub import list_models, resolve
from samzoo.registry import (
    ARCHITECTURES,
    FAMILY_ARCHITECTURES,
    MODALITIES,
    builtin_registry_path,
    load_registry,
    read_registry_file,
    split_registry_list,
)

MUSAM = {  # id: (bioimage.io alias, checkpoint xxh128, decoder xxh128)
    "vit_l_lm": ("idealistic-rat/1.2", "017f20677997d628426dec80a8018f9d", "2faeafa03819dfe03e7c46a44aaac64a"),
    "vit_b_lm": ("diplomatic-bug/1.2", "fe9252a29f3f4ea53c15a06de471e186", "708b15ac620e235f90bb38612c4929ba"),
    "vit_t_lm": ("faithful-chicken/1.1", "72ec5074774761a6e5c05a08942f981e", "3e914a5f397b0312cdd36813031f8823"),
    "vit_l_em_organelles": ("humorous-crab/1.2", "810b084b6e51acdbf760a993d8619f2d",
                            "334877640bfdaaabce533e3252a17294"),
    "vit_b_em_organelles": ("noisy-ox/1.2", "f3bf2ed83d691456bae2c3f9a05fb438", "bb6398956a6b0132c26b631c14f95ce2"),
    "vit_t_em_organelles": ("greedy-whale/1", "253474720c497cce605e57c9b1d18fd9", "8f897c7bb93174a4d1638827c4dd6f44"),
}


def _entry(**overrides) -> dict:
    entry = {"id": "my_model", "aliases": ["my-alias"], "architecture": "vit_b", "modality": "lm",
             "description": "d", "citation": "10.1038/s41592-024-02580-4", "model_card": None,
             "files": [{"role": "checkpoint", "url": "https://example.org/m.pt", "hash": xxh128(b"x")}]}
    entry.update(overrides)
    return entry


def test_builtin_registry_lists_sam_musam_and_samzoo_models():
    reg = load_registry()
    ids = {e.id for e in reg}
    assert {"vit_b", "vit_l", "vit_h", "vit_t", "samzoo-lm-tiny", *MUSAM} <= ids
    for model_id, (alias, ckpt, dec) in MUSAM.items():
        entry = reg.get(alias.upper())
        assert entry is not None and entry.id == model_id
        assert entry.file("checkpoint").hash == f"xxh128:{ckpt}"
        assert entry.file("decoder").hash == f"xxh128:{dec}"
        folder = alias.rsplit("/", 1)
        # the decoder sits in the same bioimage.io folder as the checkpoint
        assert f"/bioimage.io/{folder[0]}/{folder[1]}/files/" in entry.file("checkpoint").url
        assert entry.file("decoder").url.rsplit("/", 1)[0] == entry.file("checkpoint").url.rsplit("/", 1)[0]
        assert entry.citation == "10.1038/s41592-024-02580-4"
        assert entry.file("checkpoint").microsam_name == model_id
    for e in reg:
        assert e.architecture in FAMILY_ARCHITECTURES[e.family] and e.modality in MODALITIES
        for f in e.files:
            # every downloaded file is hashed, or its entry says why not (SAMCell: none published)
            assert f.hash is not None or f.url.startswith("package://") or (e.family == "samcell" and f.unhashed)
    tiny = reg.get("samzoo-lm-tiny")
    assert tiny.architecture == "tiny" and tiny.file("checkpoint").url == "package://samzoo/data/samzoo-lm-tiny.pt"
    local = tiny.file("checkpoint").local_path()
    assert local.parts[-3:] == ("samzoo", "data", "samzoo-lm-tiny.pt")


def test_lookup_is_case_insensitive_and_suggests(hub_env):
    reg = load_registry()
    assert reg.get("VIT_B_LM").id == "vit_b_lm" and "Diplomatic-Bug/1.2" in reg
    assert resolve("Vit_B_Lm").id == "vit_b_lm"
    with pytest.raises(ModelNotFoundError) as info:
        resolve("vit_b_lmm")
    msg = str(info.value)
    assert "'vit_b_lmm'" in msg and "did you mean 'vit_b_lm'" in msg and "samzoo models" in msg
    with pytest.raises(ModelNotFoundError, match="did you mean 'vit_t_em_organelles'"):
        resolve("vit_t_em_organels")


def test_list_models_by_modality(hub_env):
    em = {e.id for e in list_models("em")}
    assert em == {"vit_l_em_organelles", "vit_b_em_organelles", "vit_t_em_organelles", "samzoo-em-tiny"}
    assert {e.id for e in list_models(modality="lm")} >= {"vit_b_lm", "samzoo-lm-tiny"}
    assert len(list_models()) == len(load_registry())
    with pytest.raises(RegistryError, match="unknown modality 'xray'"):
        list_models("xray")


def test_user_registries_add_and_override(hub_env, tmp_path, monkeypatch):
    first = write_registry(tmp_path / "a.yaml", [_entry(), _entry(id="vit_b_lm", aliases=[], modality="em")])
    second = write_registry(tmp_path / "b.yaml", [_entry(id="other", aliases=["x-y"])])
    monkeypatch.setenv("SAMZOO_REGISTRY", os.pathsep.join([str(first), str(second)]))
    reg = load_registry()
    assert reg.get("my-alias").id == "my_model" and reg.get("x-y").id == "other"
    assert reg.get("vit_b_lm").modality == "em"  # later registries override
    assert reg.get("diplomatic-bug/1.2") is None  # the overriding entry dropped the alias
    third = write_registry(tmp_path / "c.yaml", [_entry(id="third", aliases=[])])
    assert load_registry([third]).get("third").source == str(third.resolve())


def test_split_registry_list_keeps_urls_whole(monkeypatch):
    if os.pathsep != ":":
        pytest.skip("POSIX path separator only")
    value = "/a/reg.yaml:https://host:8443/r.yaml:http://127.0.0.1:9/x/y.yaml:/b.yaml:http://plain.org/r.yaml"
    assert split_registry_list(value) == ["/a/reg.yaml", "https://host:8443/r.yaml", "http://127.0.0.1:9/x/y.yaml",
                                          "/b.yaml", "http://plain.org/r.yaml"]


@pytest.mark.parametrize("models, expected", [
    ([_entry(files=[{"role": "checkpoint", "url": "https://example.org/m.pt"}])],
     ["models[0] (id 'my_model')", "files[0].hash", "required"]),
    ([_entry(files=[{"role": "checkpoint", "url": "https://example.org/m.pt", "hash": "xxh128:abc"}])],
     ["files[0].hash", "32 hex digits"]),
    ([_entry(files=[{"role": "checkpoint", "url": "https://example.org/m.pt", "hash": "crc32:abcd"}])],
     ["files[0].hash", "unknown hash algorithm 'crc32'"]),
    ([_entry(architecture="vit_x")], ["field 'architecture'", "vit_x", "vit_b"]),
    ([_entry(modality="xray")], ["field 'modality'", "xray"]),
    ([_entry(files=[{"role": "weights", "url": "https://e.org/m.pt", "hash": xxh128(b"x")}])],
     ["files[0].role", "'weights'"]),
    ([_entry(files=[])], ["field 'files'", "non-empty"]),
    ([_entry(files=[{"role": "decoder", "url": "https://e.org/d.pt", "hash": xxh128(b"x")}])],
     ["needs a file with role 'checkpoint'"]),
    ([_entry(id="bad id")], ["field 'id'", "'bad id'"]),
    ([_entry(), _entry(aliases=[])], ["'my_model'", "already used"]),
    ([_entry(), _entry(id="second", aliases=["MY-ALIAS"])],
     ["model 'second'", "'my-alias'", "already used by model 'my_model'"]),
    ([_entry(colour="red")], ["models[0] (id 'my_model')", "unknown field(s) colour"]),
    ([_entry(model_card="cards/x.md")], ["field 'model_card'", "model_cards/"]),
    ([_entry(citation="not a doi")], ["field 'citation'", "DOI"]),
    ([_entry(files=[{"role": "checkpoint", "url": "ftp://e.org/m.pt", "hash": xxh128(b"x")}])],
     ["files[0].url", "unsupported URL scheme"]),
    ([_entry(files=[{"role": "checkpoint", "url": "https://e.org/m.pt", "hash": xxh128(b"x"), "size": -3}])],
     ["files[0].size"]),
    (["just a string"], ["models[0]", "must be a mapping"]),
])
def test_validation_errors_name_entry_and_field(tmp_path, models, expected):
    path = write_registry(tmp_path / "bad.yaml", models)
    with pytest.raises(RegistryError) as info:
        read_registry_file(path)
    msg = str(info.value)
    assert msg.startswith(f"invalid registry {path.resolve()}")
    assert "\n" not in msg
    for fragment in expected:
        assert fragment in msg, msg


def test_validation_of_the_file_itself(tmp_path):
    with pytest.raises(RegistryError, match="registry file not found"):
        read_registry_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - id: [unclosed\n")
    with pytest.raises(RegistryError, match="not valid YAML at line"):
        read_registry_file(bad)
    bad.write_text(yaml.safe_dump({"format_version": 2, "models": []}))
    with pytest.raises(RegistryError, match="format_version"):
        read_registry_file(bad)
    bad.write_text(yaml.safe_dump({"models": {"id": "x"}}))
    with pytest.raises(RegistryError, match="models: must be a list"):
        read_registry_file(bad)
    bad.write_text(yaml.safe_dump([_entry()]))
    with pytest.raises(RegistryError, match="top level must be a mapping"):
        read_registry_file(bad)


def test_several_problems_reported_together(tmp_path):
    path = write_registry(tmp_path / "bad.yaml",
                          [_entry(architecture="big"), _entry(id="two", aliases=[], modality="?")])
    with pytest.raises(RegistryError) as info:
        read_registry_file(path)
    assert "models[0] (id 'my_model') field 'architecture'" in str(info.value)
    assert "models[1] (id 'two') field 'modality'" in str(info.value)


def test_env_registry_errors_surface_on_use(hub_env, tmp_path, monkeypatch):
    path = write_registry(tmp_path / "bad.yaml", [_entry(modality="xray")])
    monkeypatch.setenv("SAMZOO_REGISTRY", str(path))
    with pytest.raises(RegistryError, match="xray"):
        resolve("vit_b_lm")


def test_remote_registry_is_fetched_and_kept_for_offline(hub_env, server):
    text = yaml.safe_dump({"format_version": 1, "models": [_entry(id="remote_model")]})
    url = server.add("/registry.yaml", text.encode())
    reg = load_registry(url)
    assert reg.get("remote_model").source == url
    n = server.total_requests
    assert load_registry(url, offline=True).get("remote_model") is not None
    assert server.total_requests == n
    server.stop()
    with pytest.warns(UserWarning, match="using the cached copy"):
        assert load_registry(url).get("remote_model") is not None


def test_remote_registry_offline_without_copy_and_local_paths(hub_env, server):
    with pytest.raises(OfflineError, match="offline"):
        load_registry(server.url("/registry.yaml"), offline=True)
    assert server.total_requests == 0
    text = yaml.safe_dump({"models": [_entry(files=[{"role": "checkpoint", "url": "/etc/model.pt"}])]})
    url = server.add("/local.yaml", text.encode())
    with pytest.raises(RegistryError, match="cannot point at local files"):
        load_registry(url)
    with pytest.raises(RegistryError, match="could not fetch registry"):
        load_registry(server.url("/missing.yaml"))


def _cli(argv):
    from samzoo.hub.cli import register

    parser = argparse.ArgumentParser(prog="samzoo")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_models_and_info(hub_env, tmp_path, capsys):
    assert _cli(["models", "--modality", "em"]) == 0
    out = capsys.readouterr().out
    assert "vit_b_em_organelles" in out and "noisy-ox/1.2" in out and "vit_b_lm " not in out
    assert _cli(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["id"] for d in data} >= set(MUSAM)
    reg = write_registry(tmp_path / "r.yaml", [_entry()])
    assert _cli(["models", "--registry", str(reg), "--modality", "lm"]) == 0
    assert "my_model" in capsys.readouterr().out
    assert _cli(["info", "diplomatic-bug/1.2"]) == 0
    out = capsys.readouterr().out
    assert "vit_b_lm" in out and "https://doi.org/10.1038/s41592-024-02580-4" in out
    assert "not in the cache" in out
    assert _cli(["info", "vit_b_lm", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["id"] == "vit_b_lm" and info["local"] is None and len(info["files"]) == 2


def test_builtin_registry_file_is_valid_yaml_in_the_package():
    path = builtin_registry_path()
    assert path.name == "registry.yaml" and path.parent.name == "registry"
    assert len(read_registry_file(path)) >= 11
    assert Path(path).read_text(encoding="utf-8").startswith("#")


def test_cli_info_shows_the_family_of_local_files(tiny_checkpoint, tmp_path, capsys):
    """`samzoo info PATH` recognises the family of a local checkpoint of every family (from the
    state dict, as load_model does) and of a package; an unreadable file is named, not a crash."""
    import torch

    from samzoo.families.cellpose_sam import build, save_checkpoint
    from samzoo.families.cellsam import build_cellsam, save_cellsam
    from samzoo.families.cellsam.config import TINY
    from samzoo.families.microsam.config import PRESETS
    from samzoo.families.samcell.checkpoint import hf_state_dict, save_checkpoint as save_samcell
    from samzoo.families.samcell.model import SamcellModel

    samcell = SamcellModel(PRESETS["test"].replace(ais_decoder=False))
    files = {
        "microsam": tiny_checkpoint,
        "samcell": save_samcell(samcell, tmp_path / "samcell.pt"),
        "cellpose_sam": save_checkpoint(build("cpsam_test"), tmp_path / "cpsam.pt"),
        "cellsam": save_cellsam(build_cellsam(TINY, seed=0), tmp_path / "cellsam.pt"),
    }
    torch.save(hf_state_dict(samcell), tmp_path / "released-layout.pt")  # the authors' transformers keys
    files["samcell (released layout)"] = tmp_path / "released-layout.pt"
    for family, path in files.items():
        assert _cli(["info", str(path), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["kind"] == "local" and info["family"] == family.split(" ")[0], (family, info)
        assert _cli(["info", str(path)]) == 0
        assert f"family:       {family.split(' ')[0]}" in capsys.readouterr().out
    (tmp_path / "notes.pt").write_bytes(b"not a checkpoint")
    assert _cli(["info", str(tmp_path / "notes.pt")]) == 0
    out = capsys.readouterr().out
    assert "problem:" in out and "notes.pt" in out and "family:" not in out


def test_family_architectures_come_from_the_family_registry(tmp_path, monkeypatch):
    """FAMILY_ARCHITECTURES asks each FamilySpec: a family registered in families/__init__ only
    (here a stand-in module) is accepted with its own architectures, without editing the registry."""
    import dataclasses
    import sys
    import types

    from samzoo import families

    assert dict(FAMILY_ARCHITECTURES) == {"microsam": ARCHITECTURES, "cellpose_sam": ("cpsam",),
                                          "cellsam": ("cellsam",), "samcell": ("vit_b",)}
    module = types.ModuleType("samzoo_test_new_family")
    module.FAMILY = dataclasses.replace(families.get_family("samcell"), name="newfam", architectures=("new_arch",))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(families.FAMILY_MODULES, "newfam", module.__name__)
    reg = load_registry(write_registry(tmp_path / "ok.yaml", [_entry(family="newfam", architecture="new_arch")]))
    assert reg.get("my_model").family == "newfam"
    with pytest.raises(RegistryError, match="must be one of new_arch for family newfam, got 'vit_b'"):
        load_registry(write_registry(tmp_path / "bad.yaml", [_entry(family="newfam", architecture="vit_b")]))
