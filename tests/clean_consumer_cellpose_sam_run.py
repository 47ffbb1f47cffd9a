"""Run inside a clean consumer environment (no samzoo): one Cellpose-SAM package on new images,
results written to OUT/ for tests/test_clean_consumer.py to compare with samzoo.

* ``instance``: bioimageio.core predicts each image whole (the package tiles inside ``forward``);
  cellpose must not be needed, so it is blocked.
* ``network``: bioimageio.core predicts blockwise (256-px blocks, the declared 16-px halo) and
  runs the spec's ``cellpose_flow_dynamics`` with the installed cellpose; then cellpose's own
  ``CellposeModel.eval`` runs the same weights (``cellpose_small_reference``) with the package's
  post-processing settings, for the agreement with cellpose's own labels.

Usage: python clean_consumer_cellpose_sam_run.py {instance|network} package.zip images.npz OUT
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from clean_consumer_common import prepare_output


def main() -> None:
    kind, package, images_path, out = sys.argv[1:5]
    out = prepare_output(out)
    if kind == "instance":
        sys.modules["cellpose"] = None  # the self-contained package must not need it

    from bioimageio.core import create_prediction_pipeline, load_model_description, predict

    images = dict(np.load(images_path))
    report: dict = {}
    description = load_model_description(package)
    pipeline = create_prediction_pipeline(description)
    for name, image in images.items():
        x = np.zeros((1, 3, *image.shape), np.float32)
        x[0, 0] = image  # one channel; the missing ones are zeros, as cellpose pads them
        start = time.perf_counter()
        if kind == "instance":
            result = predict(model=pipeline, inputs={"image": x})
        else:
            result = predict(model=pipeline, inputs={"image": x}, blocksize_parameter=0)
        report[f"predict_{name}_s"] = round(time.perf_counter() - start, 2)
        np.save(out / f"{kind}_{name}.npy", np.asarray(result.members["labels"].data)[0, 0].astype(np.uint32))

    if kind == "network":
        import torch

        sys.path.insert(0, str(Path(__file__).parent))
        from cellpose_small_reference import cellpose_model

        weights = description.weights.pytorch_state_dict
        with zipfile.ZipFile(package) as zf:  # the weights file as the package ships it
            zf.extract(Path(str(weights.source)).name, out / "weights")
        state = torch.load(out / "weights" / Path(str(weights.source)).name, weights_only=True)
        (post,) = [op.kwargs for op in description.outputs[0].postprocessing if op.id == "cellpose_flow_dynamics"]
        cellpose = cellpose_model(weights.architecture.kwargs, state)
        for name, image in images.items():
            start = time.perf_counter()
            labels = cellpose.eval(image.astype(np.float32), cellprob_threshold=post.cellprob_threshold,
                                   flow_threshold=post.flow_threshold, min_size=post.min_size)[0]
            report[f"cellpose_eval_{name}_s"] = round(time.perf_counter() - start, 2)
            np.save(out / f"cellpose_{name}.npy", labels.astype(np.uint32))
        import cellpose as cellpose_package

        report["cellpose_version"] = cellpose_package.version
    (out / f"{kind}_report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
