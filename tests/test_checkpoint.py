"""Checkpoint flavours, strict matching, and safe loading."""

from pathlib import Path

import pytest
import torch

from samzoo import CheckpointError, SamzooModel, load_checkpoint, preset, save_checkpoint
from samzoo.families.microsam.ais_decoder import decoder_state


@pytest.fixture(scope="module")
def model() -> SamzooModel:
    torch.manual_seed(1)
    return SamzooModel(preset("test"), ais_params={"min_size": 7}, metadata={"name": "unit"})


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_samzoo_round_trip_keeps_weights_config_and_params(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "deep" / "m.pt")
    loaded = load_checkpoint(path)
    assert_same_weights(model, loaded)
    assert loaded.config == model.config
    assert loaded.ais_params == {"min_size": 7}
    assert loaded.metadata["name"] == "unit"
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp files left


def test_half_storage_loads_as_float32_and_close(model, tmp_path):
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "h.pt", half=True))
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype, key
        torch.testing.assert_close(a.float(), b.float(), atol=1e-2, rtol=1e-3)


def test_plain_sam_state_dict(model, tmp_path):
    torch.save(model.sam.state_dict(), tmp_path / "sam.pt")
    loaded = load_checkpoint(tmp_path / "sam.pt")
    assert not loaded.has_ais_decoder
    assert_same_weights(model.sam, loaded.sam)


def test_micro_sam_layout_with_trainer_prefix_and_separate_decoder(model, tmp_path):
    sam_state = {f"sam.{k}": v for k, v in model.sam.state_dict().items()}
    torch.save({"model_state": sam_state, "decoder_state": decoder_state(model.ais_decoder)}, tmp_path / "ms.pt")
    loaded = load_checkpoint(tmp_path / "ms.pt")
    assert_same_weights(model, loaded)
    torch.save({"model_state": model.sam.state_dict()}, tmp_path / "enc.pt")
    torch.save(decoder_state(model.ais_decoder), tmp_path / "enc_decoder.pt")
    loaded = load_checkpoint(tmp_path / "enc.pt", decoder_path=tmp_path / "enc_decoder.pt")
    assert_same_weights(model, loaded)


def test_mismatching_keys_are_named(model, tmp_path):
    state = model.sam.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    state["image_encoder.neck.0.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pt", config=preset("test"))
    msg = str(err.value)
    assert "missing: mask_decoder.iou_token.weight" in msg
    assert "unexpected: extra.weight" in msg
    assert "image_encoder.neck.0.weight: expected (32, 32, 1, 1), got (3,)" in msg


def test_decoder_mismatch_is_named(model, tmp_path):
    bad = decoder_state(model.ais_decoder)
    bad.pop("out_conv.bias")
    torch.save({"model_state": model.sam.state_dict(), "decoder_state": bad}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="AIS decoder weights .*missing: out_conv.bias"):
        load_checkpoint(tmp_path / "d.pt")


class Payload:
    """Stands in for arbitrary code a malicious pickle could run."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model_state": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")


class OpensAFile:
    """Unpickled by plain pickle this would create a file: stands in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_trainer_checkpoint_with_pickled_modules_gives_its_weights_and_runs_nothing(model, tmp_path, caplog):
    """torch-em / micro-sam training checkpoints pickle the model object beside its weights
    (and could pickle anything): samzoo reads the weights and runs none of the pickled objects."""
    marker = tmp_path / "pickle-ran-code"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    checkpoint = {
        "model_state": {"sam." + k: v for k, v in model.sam.state_dict().items()},
        "decoder_state": decoder_state(model.ais_decoder),
        "optimizer_state": optimizer.state_dict(),
        "init": {"model_class": "micro_sam.training.trainable_sam.TrainableSAM",
                 "model_kwargs": {"sam": model.sam}, "hook": OpensAFile(marker)},
        "iteration": 5,
    }
    torch.save(checkpoint, tmp_path / "latest.pt")
    with pytest.raises(Exception):  # what torch itself does with weights_only=True
        torch.load(tmp_path / "latest.pt", weights_only=True)

    with caplog.at_level("WARNING", logger="samzoo.families.microsam.checkpoint"):
        loaded = load_checkpoint(tmp_path / "latest.pt")
    assert not marker.exists()
    assert_same_weights(model.sam, loaded.sam)
    assert_same_weights(model.ais_decoder, loaded.ais_decoder)
    assert "latest.pt" in caplog.text and "were not loaded" in caplog.text


def test_tensor_only_reader_replaces_every_foreign_global(tmp_path):
    from samzoo.tensor_unpickler import SkippedObject, read_tensors_only

    marker = tmp_path / "ran"
    torch.save({"w": torch.arange(3.0), "evil": OpensAFile(marker), "ok": [1, "a", (2.0,)]}, tmp_path / "x.pt")
    state, skipped = read_tensors_only(tmp_path / "x.pt")
    assert not marker.exists()
    assert torch.equal(state["w"], torch.arange(3.0)) and state["ok"] == [1, "a", (2.0,)]
    assert isinstance(state["evil"], SkippedObject)
    assert skipped == [f"{open.__module__}.open"]  # io.open: where pickle finds the builtin


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_unreadable_files(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="x.pt"):
        load_checkpoint(tmp_path / "x.pt")


def test_missing_file_and_foreign_dict(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load_checkpoint(Path(tmp_path / "other.pt"))
