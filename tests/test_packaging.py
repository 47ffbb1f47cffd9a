"""BioImage.IO packaging: every package passes bioimageio.core's tests, AIS labels through
bioimageio.core equal samzoo.segment, prompts work, the round trip is exact, errors are clean.

All models are random-init ``preset("test")`` models; their AIS parameters are set from their own
decoder maps on the sample image so the (random) watershed finds objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import samzoo  # noqa: F401  (torchvision fix first)
from samzoo import SamzooModel, load_checkpoint, preset, save_checkpoint
from samzoo.errors import CheckpointError, InputError, SamzooError
from samzoo.families.microsam.ais_decoder import decoder_state
from samzoo.packaging import load_package_model, package_model
from samzoo.families.microsam.packaging.weights import normalized_input, packaged_state
from samzoo.packaging.samples import synthetic_sample
from samzoo.families.microsam.ais import AisParams

os.environ.setdefault("BIOIMAGEIO_LOG_WARNINGS", "false")

CARD = {
    "id": "samzoo-test-model",
    "name": "samzoo test model",
    "description": "A random-init test model used by samzoo's packaging tests.",
    "version": "0.1.0",
    "license": "MIT",
    "modality": "synthetic light microscopy",
    "architecture": {"type": "sam", "encoder": "vit (test preset)", "decoder": "unetr"},
    "authors": [{"name": "samzoo developers"}],
    "tags": ["segment-anything", "test"],
    "training_data": {"description": "none (random init)"},
    "intended_use": "tests",
    "limitations": ["random weights"],
    "citations": [
        {"text": "Archit et al. Segment Anything for Microscopy. Nature Methods (2025)",
         "doi": "10.1038/s41592-024-02580-4"},
        {"text": "Kirillov et al. Segment Anything. ICCV (2023)", "doi": "10.1109/ICCV51070.2023.00371"},
    ],
}


def _tuned_params(model: SamzooModel, image: np.ndarray) -> dict:
    """Thresholds at quantiles of the model's own maps: a random model then still finds objects."""
    with torch.no_grad():
        maps = model(normalized_input(model, image[..., None]))[0].numpy()
    q = lambda a, p: float(np.clip(np.quantile(a, p), 0.01, 1.0))  # noqa: E731
    return {"foreground_threshold": q(maps[0], 0.4), "center_distance_threshold": q(maps[1], 0.35),
            "boundary_distance_threshold": q(maps[2], 0.35), "min_size": 4}


@pytest.fixture(scope="module")
def sample():
    return synthetic_sample(128, seed=3)


@pytest.fixture(scope="module")
def model(sample):
    torch.manual_seed(0)
    m = SamzooModel(preset("test"), metadata={"name": "samzoo test model", "metrics": {"mSA": 0.123, "SA50": 0.5}})
    m.ais_params = _tuned_params(m, sample[0])
    return m


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def card_path(workdir):
    path = workdir / "card.yaml"
    path.write_text(yaml.safe_dump(CARD), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def checkpoint(model, workdir):
    return save_checkpoint(model, workdir / "samzoo_test.pt")


@pytest.fixture(scope="module")
def packages(checkpoint, card_path, sample, workdir):
    return package_model(str(checkpoint), workdir / "out", card=card_path, sample_image=sample)


def _test_model(path, **kwargs):
    from bioimageio.core import test_model

    summary = test_model(path, **kwargs)
    failed = [d for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", "\n".join(f"{d.name}: {[e.msg for e in d.errors]}" for d in failed)
    return summary


def _formats_tested(summary) -> set[str]:
    return {d.loc[1] for d in summary.details if len(d.loc) > 1 and d.loc[0] == "weights" and d.status == "passed"}


# ------------------------------------------------------------------------------------------
# samzoo checkpoints: all three packages


def test_package_kinds_and_contents(packages):
    assert set(packages) == {"ais", "ais_network", "interactive"}
    for kind, path in packages.items():
        assert path.is_file() and path.name.endswith(f".{kind}.zip")
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            rdf = yaml.safe_load(zf.read("rdf.yaml"))
            doc = zf.read(rdf["documentation"]).decode()
            cover = zf.read(rdf["covers"][0])
        assert "weights.pt" in names
        assert cover[:8] == b"\x89PNG\r\n\x1a\n"
        assert "# Validation" in doc and "mSA" in doc and "0.123" in doc
        cite = " ".join(str(c.get("doi")) for c in rdf["cite"])
        assert "10.1038/s41592-024-02580-4" in cite and "ICCV51070" in cite
        tol = rdf["config"]["bioimageio"]["reproducibility_tolerance"]
        assert tol and all(t["output_ids"] for t in tol)
    ais_rdf = yaml.safe_load(zipfile.ZipFile(packages["ais"]).read("rdf.yaml"))
    assert set(ais_rdf["weights"]) == {"pytorch_state_dict"}
    net_rdf = yaml.safe_load(zipfile.ZipFile(packages["ais_network"]).read("rdf.yaml"))
    assert set(net_rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    for rdf in (ais_rdf, net_rdf):  # the architecture ships in the package, samzoo is not needed
        arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
        assert arch["source"] == "microsam_architecture.py" and len(arch["sha256"]) == 64
        env = zipfile.ZipFile(packages["ais"]).read(rdf["weights"]["pytorch_state_dict"]["dependencies"]["source"])
        assert b"samzoo" not in env.split(b"dependencies:")[1] and b"pytorch>=2.5" in env
    label_tol = ais_rdf["config"]["bioimageio"]["reproducibility_tolerance"][0]
    assert label_tol["absolute_tolerance"] == 0 and label_tol["relative_tolerance"] == 0


def test_ais_package_defaults_are_the_tuned_params(packages, model):
    rdf = yaml.safe_load(zipfile.ZipFile(packages["ais"]).read("rdf.yaml"))
    kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["ais_params"] == AisParams.from_dict(model.ais_params).to_dict()
    doc = zipfile.ZipFile(packages["ais"]).read(rdf["documentation"]).decode()
    assert "center_distance_threshold" in doc


@pytest.mark.parametrize("kind", ["ais_network", "interactive"])  # "ais": through the CLI below
def test_samzoo_packages_pass_bioimageio_test_model(packages, kind):
    summary = _test_model(packages[kind])
    expected = {"ais_network": {"pytorch_state_dict", "torchscript", "onnx"}, "interactive": {"pytorch_state_dict"}}[kind]
    assert expected <= _formats_tested(summary)


def test_bioimageio_cli_test_passes(packages):
    """The `bioimageio test` CLI (a fresh process, offline) on the AIS package (watershed inside)."""
    exe = Path(sys.executable).with_name("bioimageio")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bioimageio.core"]
    env = {**os.environ, "BIOIMAGEIO_CACHE_PATH": str(packages["ais"].parent / "bioimageio_cache")}
    proc = subprocess.run([*cmd, "test", str(packages["ais"])], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ais_package_predict_equals_segment(packages, model):
    """bioimageio.core.predict on a new image == samzoo.segment with the package's parameters."""
    from bioimageio.core import predict

    from samzoo.segmentation.api import segment

    image, _ = synthetic_sample(112, seed=11)  # new image, another size
    data = image.astype(np.float32)[None, None]
    out = predict(model=packages["ais"], inputs={"image": data})
    labels = np.asarray(out.members["instance_labels"].data)[0, 0]
    expected = segment(image.astype(np.float32), model, mode="ais", progress=False)
    assert labels.max() > 0
    np.testing.assert_array_equal(labels, expected)


def test_interactive_package_with_prompts(packages, model, sample):
    from bioimageio.core import create_prediction_pipeline, load_model_description
    from bioimageio.core.digest_spec import create_sample_for_model

    image = sample[0].astype(np.float32)[None, None]
    descr = load_model_description(packages["interactive"])
    boxes = np.array([[[20, 30, 60, 70], [70, 10, 110, 50]]], np.float32)
    points = np.array([[[40, 50]], [[90, 30]]], np.float32)[None]
    point_labels = np.ones((1, 2, 1), np.int64)
    with create_prediction_pipeline(descr) as pp:
        def run(**inputs):
            s = create_sample_for_model(model=descr, inputs={"image": image, **inputs})
            r = pp.predict_sample_without_blocking(s)
            return {k: np.asarray(v.data) for k, v in r.members.items()}

        first = run()  # image only: embeddings, no objects
        assert first["masks"].shape == (1, 0, 1, 128, 128) and first["scores"].shape == (1, 0, 1)
        emb = first["image_embeddings"]
        assert emb.shape == (1, 32, 8, 8)
        with_image = run(box_prompts=boxes, point_prompts=points, point_labels=point_labels)
        reused = run(box_prompts=boxes, point_prompts=points, point_labels=point_labels, embeddings=emb)
        assert with_image["masks"].shape == (1, 2, 1, 128, 128) and with_image["masks"].dtype == np.uint8
        np.testing.assert_array_equal(with_image["masks"], reused["masks"])
        np.testing.assert_allclose(with_image["scores"], reused["scores"], rtol=1e-6)
        only_points = run(point_prompts=points, point_labels=point_labels, embeddings=emb)
        assert only_points["masks"].shape == (1, 2, 1, 128, 128)
    # the same masks as running the network directly (boxes = the SAM prompt path)
    from samzoo.families.microsam.bioimageio_architecture import InteractiveSegmentation

    direct = InteractiveSegmentation(model.config.to_dict(), with_ais_decoder=True)
    direct.load_state_dict(packaged_state(model))
    masks, scores, _ = direct(torch.from_numpy(image), torch.from_numpy(boxes), torch.from_numpy(points),
                              torch.from_numpy(point_labels))
    np.testing.assert_array_equal(masks.numpy(), with_image["masks"])


ONNX_TOLERANCE = 1e-3  # absolute, on embeddings (|x| ~ 1) and IoU scores; masks must be identical


def test_interactive_onnx_encoder_and_decoder_equal_pytorch(packages, model, sample):
    """The interactive package's attached ONNX encoder + prompt decoder (onnxruntime) give the
    PyTorch model's embeddings, masks and scores on images of other sizes than the test image."""
    from onnx_prompting import InteractiveOnnx

    from samzoo.families.microsam.bioimageio_architecture import InteractiveSegmentation

    onnx = InteractiveOnnx(packages["interactive"])
    torch_net = InteractiveSegmentation(model.config.to_dict(), with_ais_decoder=True)
    torch_net.load_state_dict(packaged_state(model))
    big = np.kron(sample[0][:100], np.ones((2, 2), sample[0].dtype))[:, :170]  # 200 x 170: resized
    worst = {"embeddings": 0.0, "scores": 0.0}
    for image in (sample[0][:, :96], big):
        h, w = image.shape
        boxes = np.array([[[5, 8, w // 2, h // 2], [w // 3, h // 4, w - 3, h - 5]]], np.float32)
        points = np.array([[[[w // 4, h // 4], [w // 2, h // 3]], [[2 * w // 3, h // 2], [w // 5, h - 9]]]], np.float32)
        labels = np.array([[[1, 0], [1, 1]]], np.int64)
        emb = onnx.embed(image)
        with torch.no_grad():
            _, _, expected_emb = torch_net(torch.from_numpy(image.astype(np.float32))[None, None])
        worst["embeddings"] = max(worst["embeddings"], float(np.abs(emb - expected_emb.numpy()).max()))
        emb_t = expected_emb  # the decoder is compared on the same embeddings
        first = None
        for prompts in ({"boxes": boxes}, {"points": points, "labels": labels},
                        {"boxes": boxes, "points": points, "labels": labels}, "mask"):
            if prompts == "mask":
                prompts = {"boxes": boxes, "mask_input": first["low_res"]}
            got = onnx.decode(emb_t.numpy(), (h, w), **prompts)
            t = {"boxes": "box_prompts", "points": "point_prompts", "labels": "point_labels", "mask_input": "mask_prompts"}
            with torch.no_grad():
                masks, scores, _ = torch_net(torch.zeros(1, 1, h, w), embeddings=emb_t,
                                             **{t[k]: torch.from_numpy(np.asarray(v)) for k, v in prompts.items()})
            np.testing.assert_array_equal(got["masks"], masks.numpy())
            worst["scores"] = max(worst["scores"], float(np.abs(got["scores"] - scores.numpy()).max()))
            first = first or got
    assert max(worst.values()) <= ONNX_TOLERANCE, worst
    print(f"\ninteractive ONNX vs PyTorch, max abs: {worst}")


@pytest.mark.parametrize("kind", ["ais", "interactive"])
def test_round_trip_identical_model(packages, model, kind):
    from samzoo.api import load_model

    loaded = load_model(packages[kind])
    assert loaded.config == model.config
    assert loaded.ais_params == AisParams.from_dict(model.ais_params).to_dict()
    assert loaded.metadata == model.metadata
    original, rebuilt = model.sam.state_dict(), loaded.sam.state_dict()
    assert original.keys() == rebuilt.keys()
    assert all(torch.equal(original[k], rebuilt[k]) for k in original)
    d0, d1 = decoder_state(model.ais_decoder), decoder_state(loaded.ais_decoder)
    assert d0.keys() == d1.keys() and all(torch.equal(d0[k], d1[k]) for k in d0)


# ------------------------------------------------------------------------------------------
# micro-sam and plain SAM checkpoints


def test_micro_sam_checkpoint_packages(model, sample, workdir, card_path):
    path = workdir / "micro_sam_layout.pt"
    torch.save({"model_state": model.sam.state_dict(), "decoder_state": decoder_state(model.ais_decoder)}, path)
    loaded = load_checkpoint(path)
    assert loaded.metadata == {"source_flavour": "micro_sam"} and loaded.has_ais_decoder
    loaded.ais_params = dict(model.ais_params)  # micro-sam files carry no tuned parameters
    out = package_model(loaded, workdir / "out_micro_sam", card=card_path, sample_image=sample,
                        kinds=["ais_network"])
    assert set(out) == {"ais_network"}
    assert {"pytorch_state_dict", "torchscript", "onnx"} <= _formats_tested(_test_model(out["ais_network"]))
    rebuilt = load_package_model(out["ais_network"])
    assert all(torch.equal(v, rebuilt.sam.state_dict()[k]) for k, v in model.sam.state_dict().items())


def test_plain_sam_checkpoint_packages_interactive_only(model, sample, workdir, card_path):
    path = workdir / "plain_sam.pth"
    torch.save(model.sam.state_dict(), path)
    out = package_model(str(path), workdir / "out_sam", card=card_path, sample_image=sample)
    assert set(out) == {"interactive"}  # no AIS decoder: no AIS packages
    _test_model(out["interactive"])
    assert not load_package_model(out["interactive"]).has_ais_decoder


# ------------------------------------------------------------------------------------------
# errors: before anything expensive, and never a partial zip


def test_missing_card_fields_listed_all_at_once(workdir, checkpoint):
    card = {k: v for k, v in CARD.items() if k not in ("description", "license", "authors", "version")}
    card["citations"] = [CARD["citations"][0]]  # SAM citation missing too
    path = workdir / "bad_card.yaml"
    path.write_text(yaml.safe_dump(card), encoding="utf-8")
    out = workdir / "out_bad_card"
    with pytest.raises(SamzooError) as err:  # the model does not even exist: the card fails first
        package_model(str(workdir / "does_not_exist.pt"), out, card=path)
    message = str(err.value)
    for field in ("description", "license", "authors", "version", "Segment Anything"):
        assert field in message
    assert not list(out.glob("*"))


def test_missing_fields_in_card_mapping(workdir, model):
    with pytest.raises(SamzooError) as err:
        package_model(model, workdir / "out_map", card={"name": "only a name"})
    for field in ("description", "license", "authors", "citations", "tags", "version"):
        assert field in str(err.value)


def test_bad_inputs_fail_before_loading(workdir, checkpoint, card_path):
    from samzoo.families.microsam.packaging import package_model  # μSAM's: checks before it loads

    with pytest.raises(InputError, match="weight format"):
        package_model(str(checkpoint), workdir / "o1", formats=("keras",))
    with pytest.raises(InputError, match="pytorch_state_dict"):
        package_model(str(checkpoint), workdir / "o1", formats=("onnx",))
    with pytest.raises(InputError, match="pytorch_state_dict"):
        package_model(str(checkpoint), workdir / "o2", formats=("torchscript",))
    with pytest.raises(InputError, match="sample image"):
        package_model(str(workdir / "missing.pt"), workdir / "o3", card=card_path, sample_image=np.zeros((3, 4)))


def test_mismatched_checkpoint_keys_clear_error_no_zip(model, workdir, card_path):
    state = {"model_state": dict(model.sam.state_dict()), "decoder_state": decoder_state(model.ais_decoder)}
    state["model_state"]["mask_decoder.extra_weight"] = torch.zeros(3)
    del state["model_state"]["prompt_encoder.point_embeddings.0.weight"]
    path = workdir / "mismatch.pt"
    torch.save(state, path)
    out = workdir / "out_mismatch"
    with pytest.raises(CheckpointError) as err:
        package_model(str(path), out, card=card_path)
    assert "prompt_encoder.point_embeddings.0.weight" in str(err.value)
    assert "mask_decoder.extra_weight" in str(err.value)
    assert not list(out.glob("*.zip")) and not list(out.glob(".*"))


def test_atomic_no_partial_zip_when_a_package_fails(packages, workdir, monkeypatch):
    """Second zip fails half-written: neither it nor the first (finished) zip appears."""
    import bioimageio.spec

    from samzoo.families.microsam.packaging import export
    from bioimageio.spec import load_description

    real = bioimageio.spec.save_bioimageio_package
    calls = []

    def flaky(descr, *, output_path, **kwargs):
        calls.append(output_path)
        if len(calls) == 2:
            Path(output_path).write_bytes(b"PK\x03\x04partial")
            raise OSError("disk full")
        return real(descr, output_path=output_path, **kwargs)

    monkeypatch.setattr(bioimageio.spec, "save_bioimageio_package", flaky)
    descrs = {k: load_description(packages[k]) for k in ("ais", "interactive")}
    out = workdir / "out_atomic"
    out.mkdir()
    finals = {k: out / f"m.{k}.zip" for k in descrs}
    with pytest.raises(OSError, match="disk full"):
        export._write_zips(descrs, finals, out)
    assert len(calls) == 2
    assert list(out.iterdir()) == []


def test_unsafe_package_member_rejected(workdir, packages):
    evil = workdir / "evil.zip"
    with zipfile.ZipFile(packages["interactive"]) as src, zipfile.ZipFile(evil, "w") as dst:
        rdf = yaml.safe_load(src.read("rdf.yaml"))
        rdf["weights"]["pytorch_state_dict"]["source"] = "../../etc/passwd"
        dst.writestr("rdf.yaml", yaml.safe_dump(rdf))
    with pytest.raises(CheckpointError, match="outside"):
        load_package_model(evil)


def test_cli_package(checkpoint, card_path, workdir, capsys):
    from samzoo.cli import main

    out = workdir / "out_cli"
    code = main(["package", str(checkpoint), "-o", str(out), "--card", str(card_path),
                 "--formats", "pytorch_state_dict", "--kinds", "interactive", "--sample-image",
                 str(_write_sample(workdir))])
    assert code == 0
    assert "interactive:" in capsys.readouterr().out
    assert [p.name for p in out.glob("*.zip")] == ["samzoo-test-model.interactive.zip"]  # the card's id
    bad = workdir / "cli_bad_card.yaml"
    bad.write_text(yaml.safe_dump({"name": "x"}), encoding="utf-8")
    assert main(["package", str(checkpoint), "-o", str(workdir / "out_cli2"), "--card", str(bad)]) == 2
    assert "license" in capsys.readouterr().err


def _write_sample(workdir: Path) -> Path:
    import tifffile

    path = workdir / "sample.tif"
    if not path.exists():
        tifffile.imwrite(path, synthetic_sample(96, seed=5)[0])
    return path


def test_load_unpacked_folder_package(packages, model, workdir):
    folder = workdir / "unpacked_interactive"
    with zipfile.ZipFile(packages["interactive"]) as zf:
        zf.extractall(folder)
    loaded = load_package_model(folder)
    assert loaded.config == model.config
    assert all(torch.equal(v, loaded.sam.state_dict()[k]) for k, v in model.sam.state_dict().items())


def test_interactive_package_patch_size_8(sample, workdir, card_path):
    """Mask prompts are 4x the embedding grid, not img_size / 4 (the shipped model uses patch 8)."""
    torch.manual_seed(1)
    m = SamzooModel(preset("test", patch_size=8), with_ais_decoder=False)
    out = package_model(m, workdir / "out_patch8", card=card_path, sample_image=sample,
                        formats=("pytorch_state_dict",))
    rdf = yaml.safe_load(zipfile.ZipFile(out["interactive"]).read("rdf.yaml"))
    mask_axes = next(t for t in rdf["inputs"] if t["id"] == "mask_prompts")["axes"]
    assert [a["size"] for a in mask_axes if a.get("type") == "space"] == [64, 64]
    _test_model(out["interactive"])
