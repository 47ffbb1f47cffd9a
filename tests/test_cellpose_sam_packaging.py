"""Cellpose-SAM BioImage.IO packages: the self-contained architecture file and bioimageio.core tests."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from samzoo.families.cellpose_sam import build
from samzoo.families.cellpose_sam.inference import segment_image
from samzoo.families.cellpose_sam.packaging import network_kwargs, standalone_source
from _runtime_format import assert_shared_runtime_format


@pytest.fixture(scope="module")
def labelling_model():
    """Random weights that still produce objects (strong flows, foreground everywhere)."""
    torch.manual_seed(3)
    model = build("cpsam_test", name="cpsam-test-pk")
    with torch.no_grad():
        model.net.out.weight.mul_(20)
        model.net.out.bias[2::3].fill_(3.0)
    model.params = {"flow_threshold": 0.0}
    return model


def test_standalone_file_runs_without_samzoo_and_equals_samzoo_segment(tmp_path, labelling_model):
    source = tmp_path / "cellpose_sam_pipeline.py"
    source.write_text(standalone_source())
    weights = tmp_path / "w.pt"
    torch.save({"net." + k: v for k, v in labelling_model.net.state_dict().items()}, weights)
    image = (np.random.default_rng(0).gamma(2.0, 40.0, (1, 1, 150, 170))).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    kwargs = dict(flow_threshold=0.0, **network_kwargs(labelling_model))
    script = f"""
import sys, importlib.util, numpy as np, torch
sys.modules['samzoo'] = None; sys.modules['cellpose'] = None; sys.modules['segment_anything'] = None
spec = importlib.util.spec_from_file_location('arch', {str(source)!r}); arch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arch)
model = arch.CpsamInstanceSegmentation(**{kwargs!r})
model.load_state_dict(torch.load({str(weights)!r}, weights_only=True))
np.save({str(tmp_path / 'labels.npy')!r}, model(torch.from_numpy(np.load({str(tmp_path / 'image.npy')!r}))).numpy())
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    packaged = np.load(tmp_path / "labels.npy")[0, 0].astype(np.uint32)
    ours = segment_image(image[0, 0], labelling_model, progress=False)
    assert ours.max() > 3
    np.testing.assert_array_equal(packaged, ours)


@pytest.mark.slow
def test_both_package_kinds_pass_bioimageio_test(tmp_path, labelling_model):
    from bioimageio.core import test_model

    from samzoo.families import get_family

    written = get_family("cellpose_sam").package(labelling_model, tmp_path)
    assert set(written) == {"network", "instance"}
    for kind, path in written.items():
        assert_shared_runtime_format(path)
        summary = test_model(path)
        failed = [d.name for d in summary.details if d.status == "failed"]
        assert summary.status == "passed", (kind, failed)
