"""Issue 11, resource exhaustion from small files and numbers, and misleading checkpoint messages:
each bad input ends as a one-line error before anything large is allocated."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from samzoo.cli import main
from samzoo.errors import CheckpointError, InputError
from samzoo.io import read_image

from conftest import one_line_exit_2  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_cache")




def _state(tiny_checkpoint):
    return torch.load(tiny_checkpoint, weights_only=True)


def test_config_claiming_a_huge_model_fails_before_building(tmp_path, tiny_checkpoint, monkeypatch):
    from samzoo.families.microsam import checkpoint as ckpt

    real_builds = []
    original = ckpt.SamzooModel.__init__

    def counting(self, *args, **kwargs):
        if torch.empty(0).device.type != "meta":
            real_builds.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ckpt.SamzooModel, "__init__", counting)
    state = _state(tiny_checkpoint)
    state["config"] = {**state["config"], "embed_dim": 8192, "depth": 48, "num_heads": 16,
                       "global_attn_indexes": [47]}
    torch.save(state, tmp_path / "huge.pt")
    with pytest.raises(CheckpointError, match="embed_dim must be in"):
        ckpt.load_checkpoint(tmp_path / "huge.pt")
    # inside the bounds but not what the tensors hold: found on the meta device, nothing allocated
    state["config"] = {**state["config"], "embed_dim": 1024, "depth": 24, "num_heads": 16,
                       "global_attn_indexes": [23]}
    torch.save(state, tmp_path / "big.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        ckpt.load_checkpoint(tmp_path / "big.pt")
    assert real_builds == []


@pytest.mark.parametrize("change,needle", [
    ({"patch_size": "8"}, "patch_size must be int"),
    ({"num_heads": 0}, "num_heads must be in"),
    ({"img_size": 0}, "img_size must be in"),
    ({"mlp_ratio": None}, "mlp_ratio must be float"),
    ({"ais_decoder": "yes"}, "ais_decoder must be bool"),
])
def test_wrong_config_types_and_zeros_are_one_line(capsys, tmp_path, tiny_checkpoint, image_tif, change, needle):
    state = _state(tiny_checkpoint)
    state["config"] = {**state["config"], **change}
    torch.save(state, tmp_path / "bad.pt")
    one_line_exit_2(capsys, ["segment", image_tif, "-o", tmp_path / "l.tif", "-m", tmp_path / "bad.pt"], needle)


@pytest.mark.parametrize("key,value", [("config", [1, 2]), ("metadata", "a string"), ("ais_params", 5),
                                       ("model_state", "nope")])
def test_wrong_section_types_are_one_line(capsys, tmp_path, tiny_checkpoint, image_tif, key, value):
    state = _state(tiny_checkpoint)
    state[key] = value
    torch.save(state, tmp_path / "bad.pt")
    one_line_exit_2(capsys, ["segment", image_tif, "-o", tmp_path / "l.tif", "-m", tmp_path / "bad.pt"], key)


def test_stride_zero_tensor_is_refused(tmp_path, tiny_checkpoint):
    from samzoo.api import load_model

    state = _state(tiny_checkpoint)
    name = next(k for k, v in state["model_state"].items() if v.ndim == 2)
    rows, cols = state["model_state"][name].shape
    state["model_state"][name] = torch.zeros(1).expand(rows, cols)  # 1 stored value, many claimed
    torch.save(state, tmp_path / "stride0.pt")
    assert (tmp_path / "stride0.pt").stat().st_size < 10 * 1024 * 1024
    with pytest.raises(CheckpointError, match="stride-0"):
        load_model(tmp_path / "stride0.pt")


def test_random_bytes_and_safetensors_are_named_right(tmp_path, tiny_model):
    from safetensors.torch import save_file

    from samzoo.api import load_model

    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "random.pt")
    assert "Python objects" not in str(info.value) and "not a checkpoint" in str(info.value)
    # a safetensors file under a .pt name is read as safetensors, not called "pickled objects"
    save_file({"x": torch.zeros(2)}, str(tmp_path / "weights.pt"))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "weights.pt")
    assert "Python objects" not in str(info.value)
    # a truncated checkpoint says so
    data = (tmp_path / "cut.pt")
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(1000)}, buffer)
    data.write_bytes(buffer.getvalue()[:1500])
    with pytest.raises(CheckpointError, match="damaged or cut short|not a checkpoint"):
        load_model(data)


def test_pickle_build_cannot_change_allowlisted_torch_functions(tmp_path):
    from samzoo.state_files import read_state

    target = torch._utils._rebuild_tensor_v2
    doc_before, defaults_before = target.__doc__, target.__defaults__
    state = pickle.dumps((None, {"__doc__": "changed by a checkpoint", "__defaults__": (1,)}), protocol=2)[2:-1]
    payload = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + state + b"b0" + pickle.dumps({"w": 1}, protocol=2)[2:]
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, \
            zipfile.ZipFile(tmp_path / "build.pt", "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = payload if info.filename.endswith("/data.pkl") else source.read(info)
            out.writestr(info.filename, data)
    with pytest.raises(CheckpointError):
        read_state(tmp_path / "build.pt")
    assert target.__doc__ == doc_before and target.__defaults__ == defaults_before


class PickledModule:  # stands for an nn.Module that torch-em pickles beside the weights
    pass


def test_training_checkpoint_warning_names_real_types(tmp_path, caplog):
    from samzoo.state_files import read_state

    torch.save({"model_state": {"w": torch.ones(2)}, "init": {"model": PickledModule()}}, tmp_path / "t.pt",
               pickle_module=pickle)
    with caplog.at_level("WARNING"):
        state = read_state(tmp_path / "t.pt")
    assert torch.equal(state["model_state"]["w"], torch.ones(2))
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "1 type(s)" in text and "PickledModule" in text and "0 classes" not in text


def test_tiff_claiming_65536_squared_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((256, 256), np.uint8), tile=(256, 256))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(65536)
        tags["ImageLength"].overwrite(65536)
    assert path.stat().st_size < 4 * 1024 * 1024
    with pytest.raises(InputError, match="SAMZOO_MAX_IMAGE_PIXELS"):
        read_image(path)


def test_png_bomb_and_the_overridable_limit(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    from samzoo.io import write_png

    png = tmp_path / "big.png"
    write_png(png, np.zeros((200, 300), np.uint8))
    monkeypatch.setenv("SAMZOO_MAX_IMAGE_PIXELS", "50000")
    one_line_exit_2(capsys, ["segment", png, "-o", tmp_path / "l.tif", "-m", tiny_checkpoint], "limit")
    assert read_image(png, max_samples=10**6).shape[:2] == (200, 300)  # the API can raise it per call
    monkeypatch.setenv("SAMZOO_MAX_IMAGE_PIXELS", "lots")
    one_line_exit_2(capsys, ["segment", png, "-o", tmp_path / "l.tif", "-m", tiny_checkpoint],
                     "SAMZOO_MAX_IMAGE_PIXELS")
    np.save(tmp_path / "big.npy", np.zeros((300, 300), np.uint8))
    monkeypatch.setenv("SAMZOO_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(InputError, match="limit"):
        read_image(tmp_path / "big.npy")


@pytest.mark.parametrize("argv,needle", [
    (["--tile-shape", "1"], "tile_shape must be >="),
    (["--param", "points_per_side=100000", "--mode", "amg"], "points_per_side"),
    (["--param", "points_per_batch=0", "--mode", "amg"], "points_per_batch"),
    (["--param", "distance_smoothing=1e9"], "distance_smoothing"),
    (["--param", "min_size=1e400"], "min_size"),
])
def test_numeric_bounds(capsys, tmp_path, image_tif, tiny_checkpoint, argv, needle):
    one_line_exit_2(capsys, ["segment", image_tif, "-o", tmp_path / "l.tif", "-m", tiny_checkpoint, *argv], needle)
