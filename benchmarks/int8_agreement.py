"""Agreement of ``--precision int8`` labels with float32 labels (mSA), shipped model, real images.

For each image: AIS labels with the float32 model and with its int8 copy (``quantize_int8``),
then mSA (IoU 0.5..0.95) of the int8 labels against the float32 ones, object counts and the
process CPU time of each. Images: the shipped sample plus the first ``--per-set`` val images of
each set under ``--data`` (cut to ``--max-side`` px; the data is not in the repository).

    python benchmarks/int8_agreement.py --data /work/shared/data --out benchmarks/results/int8_agreement.json

``--bfloat16`` adds bfloat16-autocast labels against float32 (a reference for how much any
reduced precision moves the watershed on the same image; slow on CPUs without BF16 units).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--sets", nargs="+", default=["dsb2018-nuclei", "usiigaci-phase"])
    parser.add_argument("--per-set", type=int, default=4)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bfloat16", action="store_true")
    parser.add_argument("--no-sample", action="store_true", help="skip the shipped sample image")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import numpy as np
    import tifffile
    import torch

    from samzoo.evaluation.metrics import mean_segmentation_accuracy
    from samzoo.families.microsam.quantization import quantize_int8
    from samzoo.segmentation.api import resolve_model, segment

    torch.set_num_threads(args.threads)
    model = resolve_model(None)
    quantized = quantize_int8(model)
    images = [] if args.no_sample else [
        ("sample_nuclei.tif", tifffile.imread(str(resources.files("samzoo") / "data" / "sample_nuclei.tif")))]
    if args.data:
        for name in args.sets:
            for path in sorted((Path(args.data) / name / "val" / "images").glob("*.tif"))[: args.per_set]:
                images.append((f"{name}/{path.name}", tifffile.imread(path)[: args.max_side, : args.max_side]))
    rows = []
    for name, image in images:
        t0 = time.process_time()
        reference = segment(image, model, progress=False, embedding_cache=False)
        t1 = time.process_time()
        labels = segment(image, quantized, progress=False, embedding_cache=False)
        t2 = time.process_time()
        msa = float(mean_segmentation_accuracy(labels, reference)[0])
        rows.append({"image": name, "shape": list(image.shape), "objects_float32": int(reference.max()),
                     "objects_int8": int(labels.max()), "msa_int8_vs_float32": round(msa, 4),
                     "cpu_seconds_float32": round(t1 - t0, 2), "cpu_seconds_int8": round(t2 - t1, 2)})
        if args.bfloat16:
            t3 = time.process_time()
            bf16 = segment(image, model, progress=False, embedding_cache=False, precision="bfloat16")
            rows[-1]["cpu_seconds_bfloat16"] = round(time.process_time() - t3, 2)
            rows[-1]["msa_bfloat16_vs_float32"] = round(float(mean_segmentation_accuracy(bf16, reference)[0]), 4)
            rows[-1]["objects_bfloat16"] = int(bf16.max())
        print(json.dumps(rows[-1]), file=sys.stderr)
    values = np.array([r["msa_int8_vs_float32"] for r in rows])
    result = {"model": "samzoo-lm-tiny (shipped)", "threads": args.threads, "images": rows,
              "msa_mean": round(float(values.mean()), 4), "msa_min": round(float(values.min()), 4),
              "images_at_or_above_0.98": int((values >= 0.98).sum()), "load_average": os.getloadavg()}
    if args.bfloat16:
        bf16_values = np.array([r["msa_bfloat16_vs_float32"] for r in rows])
        result.update({"bfloat16_msa_mean": round(float(bf16_values.mean()), 4),
                       "bfloat16_msa_min": round(float(bf16_values.min()), 4),
                       "bfloat16_images_at_or_above_0.98": int((bf16_values >= 0.98).sum())})
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
