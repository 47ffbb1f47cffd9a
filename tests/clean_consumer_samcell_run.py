"""Run inside the clean consumer environment (no samzoo): SAMCell's two packages on new images,
results written to OUT/ for tests/test_clean_consumer.py to compare with samzoo.

Usage: python clean_consumer_samcell_run.py instance.zip network.zip images.npz OUT
"""

from __future__ import annotations

import sys
import time

import numpy as np

from clean_consumer_common import prepare_output


def main() -> None:
    instance_zip, network_zip, images_path, out = sys.argv[1:5]
    out = prepare_output(out)
    for name in ("cv2", "skimage"):  # the package must not need them either
        sys.modules[name] = None

    from bioimageio.core import create_prediction_pipeline, load_model_description, predict

    images = dict(np.load(images_path))
    pipeline = create_prediction_pipeline(load_model_description(instance_zip))
    for name, image in images.items():
        start = time.perf_counter()
        result = predict(model=pipeline, inputs={"image": image.astype(np.float32)[None, None]})
        np.save(out / f"instance_{name}.npy", np.asarray(result.members["labels"].data)[0, 0])
        print(f"instance {name}: {time.perf_counter() - start:.1f} s")
    pipeline = create_prediction_pipeline(load_model_description(network_zip))
    image = next(iter(images.values()))
    result = predict(model=pipeline, inputs={"image": image.astype(np.float32)[None, None]}, blocksize_parameter=0)
    np.save(out / "network_map.npy", np.asarray(result.members["distance"].data)[0, 0])


if __name__ == "__main__":
    main()
