"""CellSAM's BioImage.IO package: self-contained architecture, same labels as samzoo, test_model
passes, licence carried and enforced by publish."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

import samzoo  # noqa: F401
from samzoo.errors import PublishError
from samzoo.families.cellsam import LICENCE_NON_COMMERCIAL, TINY, CellSAMParams, build_cellsam
from samzoo.families.cellsam.model import CellSAMMetadata
from samzoo.families.cellsam.packaging import architecture_source, build_packaged, package_cellsam
from samzoo.families.cellsam.segment import segment_image
from _runtime_format import assert_shared_runtime_format


def _model(seed=0, adv=True):
    model = build_cellsam(TINY, with_model_cp=adv, seed=seed)
    head = model.networks.cellfinder.decode_head.transformer
    with torch.no_grad():
        head.class_embed[0].bias.zero_()
        head.class_embed[0].weight.normal_(0, 0.5)
        # the default Anchor-DETR init (a random pattern, 1x position MLPs), not samzoo's training init
        head.pattern.weight.copy_(torch.randn(head.pattern.weight.shape, generator=torch.Generator().manual_seed(seed)))
        for mlp in (head.adapt_pos2d, head.adapt_pos1d):
            mlp[2].weight.div_(6)
    model.params = CellSAMParams(iou_threshold=0.0, min_size=0, normalization="minmax", tiling=False,
                                 exact_two_means=True)
    return model


def test_architecture_file_imports_only_torch_numpy_scipy():
    tree = ast.parse(architecture_source())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"torch", "numpy", "scipy", "math", "__future__"}, roots


@pytest.mark.parametrize("adv", [True, False])
def test_packaged_pipeline_equals_samzoo(tmp_path, adv):
    """The package's own SAM/CellFinder code (no segment-anything) gives samzoo's labels."""
    model = _model(seed=3, adv=adv)
    from samzoo.families.cellsam.packaging import ARCH_FILE

    arch = tmp_path / ARCH_FILE
    arch.write_text(architecture_source())
    net = build_packaged(model, arch)
    rng = np.random.default_rng(0)
    for shape in [(70, 90), (128, 100)]:
        image = rng.random(shape + (3,)).astype(np.float32) * 100
        image[..., 0] = 0
        ours = segment_image(model, image)
        packaged = net(torch.from_numpy(image.transpose(2, 0, 1).copy())[None]).numpy()[0, 0]
        assert ours.max() > 0
        assert np.mean(ours != packaged) < 1e-3


@pytest.mark.slow
def test_package_passes_bioimageio_test_and_carries_licence(tmp_path):
    model = _model()
    model.metadata = CellSAMMetadata(name="cellsam-tiny-test", licence=LICENCE_NON_COMMERCIAL, redistributable=False)
    zip_path = package_cellsam(model, tmp_path, kinds=["instance_segmentation"], test=True)["instance_segmentation"]
    assert_shared_runtime_format(zip_path)
    from samzoo.publishing._files import restricted_licence

    assert "non-commercial" in restricted_licence(zip_path)
    from samzoo.publishing.zenodo import publish_zenodo

    with pytest.raises(PublishError, match="--licence-allows-publishing"):
        publish_zenodo([zip_path], dry_run=True)
    # confirmed: the licence check passes (the dry run then stops at the card, which this test lacks)
    with pytest.raises(PublishError) as err:
        publish_zenodo([zip_path], dry_run=True, licence_allows_publishing=True)
    assert "licence" not in str(err.value)


@pytest.mark.slow
def test_sam_part_as_interactive_package_passes_bioimageio_test(tmp_path):
    """CellSAM's SAM part (model_cp here) through the registry as μSAM's interactive package:
    bioimageio.core's test passes, the weights are exactly model_cp's, the licence travels."""
    import zipfile

    from bioimageio.core import test_model

    from samzoo.families.cellsam.packaging import sam_part
    from samzoo.packaging import package_model
    from samzoo.publishing._files import restricted_licence

    model = _model(seed=4, adv=True)
    model.metadata = CellSAMMetadata(name="cellsam-tiny-test", licence=LICENCE_NON_COMMERCIAL, redistributable=False)
    out = package_model(model, tmp_path, kinds=["interactive"], formats=["pytorch_state_dict"])
    assert set(out) == {"interactive"}
    summary = test_model(out["interactive"])
    assert summary.status == "passed", summary.format()[:2000]
    assert_shared_runtime_format(out["interactive"])
    with zipfile.ZipFile(out["interactive"]) as zf:
        weights = [n for n in zf.namelist() if n.endswith(".pt")]
        assert len(weights) == 1
        state = torch.load(zf.open(weights[0]), weights_only=True)
    expected = model.networks.model_cp.state_dict()
    assert {k[4:] for k in state} == set(expected)
    assert all(torch.equal(state[f"sam.{k}"], v) for k, v in expected.items())
    assert not torch.equal(state["sam.mask_decoder.iou_token.weight"], model.networks.model.mask_decoder.iou_token.weight)
    assert "non-commercial" in restricted_licence(out["interactive"])
    # the μSAM model built from the part computes CellSAM's embeddings
    x = torch.rand(1, 3, TINY.img_size, TINY.img_size)
    with torch.no_grad():
        torch.testing.assert_close(sam_part(model).sam.image_encoder(x), model.networks.model_cp.image_encoder(x),
                                   rtol=0, atol=1e-5)


def test_sam_part_choice_and_bad_kinds():
    from samzoo.errors import InputError
    from samzoo.families.cellsam.packaging import sam_part

    plain = _model(seed=5, adv=False)
    part = sam_part(plain)  # no model_cp: the part CellSAM decodes with is model
    assert all(torch.equal(part.sam.state_dict()[k], v) for k, v in plain.networks.model.state_dict().items())
    with pytest.raises(InputError, match="no model_cp"):
        sam_part(plain, "model_cp")
    with pytest.raises(InputError, match="unknown CellSAM SAM part"):
        sam_part(plain, "cellfinder")
    with pytest.raises(InputError, match="unknown CellSAM package kind"):
        package_cellsam(plain, "unused", kinds=["ais"])
    with pytest.raises(InputError, match="pytorch_state_dict weights only"):
        package_cellsam(plain, "unused", formats=["onnx"])
