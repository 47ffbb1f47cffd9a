"""Packages are checked before use, and load from anywhere a package can come from.

* a changed file (zeroed weights under an unchanged rdf.yaml), a missing file, an invalid rdf.yaml,
  weights that do not fit the declared architecture: one-line error naming the file or field, CLI
  exit code 2, nothing written or cached;
* packages load from a zip, a folder, an rdf.yaml URL and a bioimage.io ID (real HTTP servers on
  127.0.0.1; bioimageio.spec's own ID resolution pointed at them).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from _hub_servers import FileServer, hub_env, server  # noqa: F401

import samzoo
from samzoo import SamzooModel, preset
from samzoo.cli import main as cli_main
from samzoo.families.microsam.ais import AisParams
from samzoo.hub import fetch
from samzoo.errors import CheckpointError, HashMismatchError, ModelNotFoundError, PackageIntegrityError
from samzoo.packaging import package_model
from samzoo.packaging.samples import synthetic_sample
from samzoo.packaging.integrity import referenced_files, verify_package

os.environ.setdefault("BIOIMAGEIO_LOG_WARNINGS", "false")
pytestmark = pytest.mark.usefixtures("isolated_cache")

CARD = {
    "id": "integrity-test", "name": "integrity test model", "version": "0.1.0", "license": "MIT",
    "description": "A random-init model for the package integrity tests.",
    "modality": "synthetic light microscopy",
    "architecture": {"type": "sam", "encoder": "vit (test preset)", "decoder": "unetr"},
    "authors": [{"name": "Ada Lovelace"}], "tags": ["segment-anything", "test"],
    "training_data": {"description": "none (random init)"}, "intended_use": "tests",
    "limitations": ["random weights"],
    "citations": [
        {"text": "Archit et al. Segment Anything for Microscopy. Nature Methods (2025)",
         "doi": "10.1038/s41592-024-02580-4"},
        {"text": "Kirillov et al. Segment Anything. ICCV (2023)", "doi": "10.1109/ICCV51070.2023.00371"},
    ],
}


SAMPLE = synthetic_sample(96, seed=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = SamzooModel(preset("test"), metadata={"name": "integrity test model"})
    from samzoo.families.microsam.packaging.weights import normalized_input

    with torch.no_grad():  # thresholds at quantiles of its own maps: a random model still finds objects
        maps = m.eval()(normalized_input(m, SAMPLE[0][..., None]))[0].numpy()
    q = lambda a, p: float(np.clip(np.quantile(a, p), 0.01, 1.0))  # noqa: E731
    m.ais_params = {"foreground_threshold": q(maps[0], 0.4), "center_distance_threshold": q(maps[1], 0.35),
                    "boundary_distance_threshold": q(maps[2], 0.35), "min_size": 4}
    return m


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity")
    paths = package_model(model, out / "pkgs", card=CARD, sample_image=SAMPLE,
                          formats=["pytorch_state_dict"], kinds=["ais"])
    return paths["ais"]


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _unpack(zip_path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, data in _members(zip_path).items():
        (folder / name).write_bytes(data)
    return folder


def _same_weights(a: SamzooModel, b: SamzooModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _zeroed_weights(data: bytes) -> bytes:
    state = torch.load(io.BytesIO(data), weights_only=True)
    buf = io.BytesIO()
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, buf)
    return buf.getvalue()


def _rdf(members: dict[str, bytes]) -> dict:
    return yaml.safe_load(members["rdf.yaml"])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def _cli(capsys, *argv) -> tuple[int, str]:
    code = cli_main([str(a) for a in argv])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# what the check covers


def test_every_file_of_a_samzoo_package_is_named_with_its_hash(package):
    members = _members(package)
    named = {src: sha for src, sha, _ in referenced_files(_rdf(members))}
    assert set(named) == set(members) - {"rdf.yaml"}
    assert all(named[name] == _sha(members[name]) for name in named)


def test_intact_package_loads_from_zip_and_folder(package, model, tmp_path, isolated_cache):
    assert _same_weights(samzoo.load_model(package), model)
    assert _same_weights(samzoo.load_model(_unpack(package, tmp_path / "pkg")), model)
    # the description's successful validation is remembered (bioimageio.spec is not imported again)
    assert len(list((isolated_cache / "validated-descriptions").rglob("*"))) == 2  # one folder, one marker


# ------------------------------------------------------------------------------------------
# bad packages: one-line error naming the file or field, exit 2, nothing written


def test_zeroed_weights_with_unchanged_rdf_are_refused(package, tmp_path, capsys, isolated_cache):
    members = _members(package)
    members["weights.pt"] = _zeroed_weights(members["weights.pt"])
    bad = _write_zip(tmp_path / "zeroed.zip", members)
    with pytest.raises(PackageIntegrityError, match=r"weights\.pt does not match the sha256 in its rdf\.yaml"):
        samzoo.load_model(bad)
    folder = _unpack(bad, tmp_path / "zeroed")
    with pytest.raises(PackageIntegrityError, match=r"weights\.pt does not match"):
        samzoo.load_model(folder)

    image = tmp_path / "img.tif"
    tifffile.imwrite(image, SAMPLE[0])
    out = tmp_path / "labels.tif"
    code, err = _cli(capsys, "segment", image, "-o", out, "--model", bad, "--quiet")
    assert code == 2 and "weights.pt does not match" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code, err = _cli(capsys, "package", bad, "-o", tmp_path / "repackaged")
    assert code == 2 and "weights.pt does not match" in err
    assert not any((tmp_path / "repackaged").glob("*.zip")) and _nothing_in(isolated_cache)


@pytest.mark.parametrize("name", ["weights.pt", "instance_labels.npy", "README.md", "environment.yaml"])
def test_missing_file_is_named(package, tmp_path, capsys, name):
    members = _members(package)
    del members[name]
    bad = _write_zip(tmp_path / "missing.zip", members)
    with pytest.raises(PackageIntegrityError, match=rf"{name} \(named by [\w.\[\]]+\) is missing from the package"):
        samzoo.load_model(bad)
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, SAMPLE[0])
    code, err = _cli(capsys, "segment", image, "-o", tmp_path / "o.tif", "--model", bad)
    assert code == 2 and f"{name} (named by" in err and not (tmp_path / "o.tif").exists()


def test_changed_cover_is_named(package, tmp_path):
    """Covers and documentation are plain paths in format 0.5.10 (bioimage.io's runtime needs that);
    their sha256 in config.samzoo.file_sha256 is checked all the same."""
    members = _members(package)
    rdf = _rdf(members)
    assert rdf["format_version"] == "0.5.10" and isinstance(rdf["covers"][0], str)
    assert isinstance(rdf["documentation"], str)
    cover = rdf["covers"][0]
    members[cover] = members[cover][:-8] + b"\0" * 8
    with pytest.raises(PackageIntegrityError, match=rf"{cover} does not match .*covers\[0\]"):
        samzoo.load_model(_write_zip(tmp_path / "bad_cover.zip", members))


def test_changed_test_tensor_is_named(package, tmp_path):
    members = _members(package)
    labels = np.load(io.BytesIO(members["instance_labels.npy"]))
    buf = io.BytesIO()
    np.save(buf, np.zeros_like(labels))
    members["instance_labels.npy"] = buf.getvalue()
    with pytest.raises(PackageIntegrityError, match=r"instance_labels\.npy does not match .*outputs\[0\]\.test_tensor"):
        samzoo.load_model(_write_zip(tmp_path / "bad.zip", members))


@pytest.mark.parametrize("change, field", [
    (lambda rdf: rdf.pop("inputs"), "field inputs"),
    (lambda rdf: rdf["weights"]["pytorch_state_dict"].pop("source"), "field weights.pytorch_state_dict.source"),
    (lambda rdf: rdf.update(license="not a licence"), "field license"),
    (lambda rdf: rdf["outputs"][0]["axes"][1].update(type="time"), "field outputs.0.axes"),
    (lambda rdf: rdf.update(type="dataset"), "field type"),
])
def test_invalid_rdf_names_the_field(package, tmp_path, capsys, change, field, isolated_cache):
    members = _members(package)
    rdf = _rdf(members)
    change(rdf)
    members["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    bad = _write_zip(tmp_path / "invalid.zip", members)
    with pytest.raises(PackageIntegrityError, match="rdf.yaml") as info:
        samzoo.load_model(bad)
    assert field in str(info.value) and "\n" not in str(info.value)
    code, err = _cli(capsys, "package", bad, "-o", tmp_path / "out")
    assert code == 2 and field in err and not any((tmp_path / "out").glob("*.zip"))
    assert _nothing_in(isolated_cache)


def test_weights_that_do_not_fit_the_architecture(package, tmp_path, capsys, isolated_cache):
    """Hashes right (the rdf was updated with the new weights), but the weights are another model's."""
    members = _members(package)
    torch.manual_seed(1)
    config = preset("test", embed_dim=48)
    other = SamzooModel(config)
    from samzoo.families.microsam.packaging.weights import packaged_state

    buf = io.BytesIO()
    torch.save(packaged_state(other), buf)
    members["weights.pt"] = buf.getvalue()
    rdf = _rdf(members)
    rdf["weights"]["pytorch_state_dict"]["sha256"] = _sha(members["weights.pt"])
    members["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    bad = _write_zip(tmp_path / "misfit.zip", members)
    with pytest.raises(CheckpointError, match="weights of misfit.zip") as info:
        samzoo.load_model(bad)
    assert "\n" not in str(info.value) and "shape" in str(info.value)
    code, err = _cli(capsys, "package", bad, "-o", tmp_path / "out")
    assert code == 2 and "weights of misfit.zip" in err and not any((tmp_path / "out").glob("*.zip"))
    assert _nothing_in(isolated_cache)


def test_unsafe_file_names_in_rdf(package, tmp_path):
    members = _members(package)
    rdf = _rdf(members)
    rdf["documentation"] = {"source": "../../etc/passwd"}
    members["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    with pytest.raises(PackageIntegrityError):
        verify_package(_write_zip(tmp_path / "unsafe.zip", members))


# ------------------------------------------------------------------------------------------
# packages by rdf.yaml URL and by bioimage.io ID


def _serve(server: FileServer, folder: str, members: dict[str, bytes]) -> str:
    for name, data in members.items():
        server.add(f"{folder}/{name}", data)
    return server.url(f"{folder}/rdf.yaml")


def test_package_loads_by_rdf_url(hub_env, server, package, model):
    url = _serve(server, "/models/integrity", _members(package))
    loaded = samzoo.load_model(url)
    assert _same_weights(loaded, model) and loaded.ais_params == AisParams.from_dict(model.ais_params).to_dict()
    assert fetch(url).is_dir()  # the package folder, not its weights file as a "checkpoint"
    n = server.total_requests
    assert _same_weights(samzoo.load_model(url), model) and server.total_requests == n  # from the cache


def test_package_loads_by_bioimageio_id(hub_env, server, package, model, monkeypatch):
    from bioimageio.spec import settings
    from bioimageio.spec._internal.io_utils import get_id_map

    monkeypatch.setattr(settings, "collection_http_pattern",
                        server.base + "/bioimage-io/artifacts/{bioimageio_id}/files/rdf.yaml")
    monkeypatch.setattr(settings, "id_map", server.base + "/id_map.json")
    monkeypatch.setattr(settings, "id_map_draft", server.base + "/id_map_draft.json")
    get_id_map.cache_clear()
    try:
        _serve(server, "/bioimage-io/artifacts/integrity-shark/files", _members(package))
        assert _same_weights(samzoo.load_model("integrity-shark"), model)
    finally:
        get_id_map.cache_clear()


def test_remote_package_with_wrong_hash_caches_nothing(hub_env, server, package, tmp_path, capsys):
    members = _members(package)
    members["weights.pt"] = _zeroed_weights(members["weights.pt"])
    url = _serve(server, "/models/zeroed", members)
    with pytest.raises(HashMismatchError, match="weights.pt"):
        samzoo.load_model(url)
    assert _nothing_in(hub_env)
    tifffile.imwrite(tmp_path / "x.tif", SAMPLE[0])
    code, err = _cli(capsys, "segment", tmp_path / "x.tif", "-o", tmp_path / "o.tif", "--model", url)
    assert code == 2 and "weights.pt" in err


def test_remote_package_whose_weights_do_not_fit_caches_nothing(hub_env, server, package):
    members = _members(package)
    buf = io.BytesIO()
    torch.save({"sam.nonsense": torch.zeros(3)}, buf)
    members["weights.pt"] = buf.getvalue()
    rdf = _rdf(members)
    rdf["weights"]["pytorch_state_dict"]["sha256"] = _sha(members["weights.pt"])
    members["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    url = _serve(server, "/models/misfit", members)
    with pytest.raises(CheckpointError, match="weights of"):
        samzoo.load_model(url)
    assert _nothing_in(hub_env)


def test_remote_invalid_rdf_names_the_field_and_caches_nothing(hub_env, server, package):
    members = _members(package)
    rdf = _rdf(members)
    rdf.pop("inputs")
    members["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    url = _serve(server, "/models/invalid", members)
    with pytest.raises(ModelNotFoundError, match="inputs"):
        samzoo.load_model(url)
    assert _nothing_in(hub_env)
