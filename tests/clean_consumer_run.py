"""Run inside the clean consumer environment (no samzoo): everything a consumer does with samzoo's
packages, results written to OUT/ for tests/test_clean_consumer.py to compare with samzoo.

Usage: python clean_consumer_run.py ais.zip ais_network.zip interactive.zip image.npy prompts.npz OUT
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
    ais_zip, net_zip, inter_zip, image_path, prompts_path, out = sys.argv[1:7]
    out = prepare_output(out)

    import torch
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict
    from bioimageio.core.digest_spec import create_sample_for_model
    from ruyaml import YAML  # what bioimageio.spec itself reads YAML with

    image = np.load(image_path)  # (H, W) raw
    x = image.astype(np.float32)[None, None]
    report = {"versions": {"torch": torch.__version__, "numpy": np.__version__}}

    # ais: whole image, the model tiles large images itself
    t = time.perf_counter()
    result = predict(model=ais_zip, inputs={"image": x})
    np.save(out / "ais_labels.npy", np.asarray(result.members["instance_labels"].data)[0, 0])
    report["ais_predict_s"] = time.perf_counter() - t

    # ais_network: blockwise (S x S blocks, declared halo cropped), every weight format
    descr = load_model_description(net_zip)
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        t = time.perf_counter()
        pp = create_prediction_pipeline(descr, weight_format=fmt)
        result = predict(model=pp, inputs={"image": x}, blocksize_parameter=1)
        np.save(out / f"maps_{fmt}.npy", np.asarray(result.members["decoder_maps"].data)[0])
        report[f"ais_network_blockwise_{fmt}_s"] = time.perf_counter() - t

    # the network files directly: onnxruntime and plain torch.jit.load on the package's test block
    with zipfile.ZipFile(net_zip) as zf:
        rdf = YAML(typ="safe").load(zf.read("rdf.yaml").decode())
        block = np.load(zf.open(rdf["inputs"][0]["test_tensor"]["source"]))
        onnx_bytes = zf.read(rdf["weights"]["onnx"]["source"])
        ts_path = out / "network.torchscript.pt"
        ts_path.write_bytes(zf.read(rdf["weights"]["torchscript"]["source"]))
    kw = next(p["kwargs"] for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range")  # then clip, x255
    lo, hi = np.percentile(block, (kw["min_percentile"], kw["max_percentile"]))
    scaled = (np.clip((block - lo) / (hi - lo + kw.get("eps", 1e-6)), 0, 1) * 255).astype(np.float32)
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_maps = session.run(None, {session.get_inputs()[0].name: scaled})[0]
    jit_maps = torch.jit.load(str(ts_path)).eval()(torch.from_numpy(scaled)).detach().numpy()
    report["onnxruntime_vs_torch_jit_direct_max_abs"] = float(np.abs(onnx_maps - jit_maps).max())
    reference = np.load(out / "maps_pytorch_state_dict.npy")  # through bioimageio.core, blockwise
    report["onnx_vs_pytorch_max_abs"] = float(np.abs(np.load(out / "maps_onnx.npy") - reference).max())
    report["torchscript_vs_pytorch_max_abs"] = float(np.abs(np.load(out / "maps_torchscript.npy") - reference).max())
    report["onnxruntime_version"] = onnxruntime.__version__

    # interactive: embeddings once, then prompts on them
    prompts = dict(np.load(prompts_path))
    descr = load_model_description(inter_zip)
    with create_prediction_pipeline(descr) as pp:
        def run(**inputs):
            s = create_sample_for_model(model=descr, inputs={"image": x, **inputs})
            return {str(k): np.asarray(v.data) for k, v in pp.predict_sample_without_blocking(s).members.items()}

        first = run()
        second = run(embeddings=first["image_embeddings"], **prompts)
    np.save(out / "interactive_masks.npy", second["masks"])
    np.save(out / "interactive_scores.npy", second["scores"])

    # interactive, ONNX: the attached encoder and prompt decoder in onnxruntime, against the above
    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_prompting import InteractiveOnnx

    t = time.perf_counter()
    onnx = InteractiveOnnx(Path(inter_zip))
    embeddings = onnx.embed(image)
    got = onnx.decode(first["image_embeddings"], image.shape, boxes=prompts["box_prompts"],
                      points=prompts["point_prompts"], labels=prompts["point_labels"])
    report["interactive_onnx_s"] = time.perf_counter() - t
    report["interactive_onnx_embeddings_max_abs"] = float(np.abs(embeddings - first["image_embeddings"]).max())
    report["interactive_onnx_scores_max_abs"] = float(np.abs(got["scores"] - second["scores"]).max())
    report["interactive_onnx_masks_mismatched_pixels"] = int((got["masks"] != second["masks"]).sum())
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
