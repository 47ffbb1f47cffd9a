"""samzoo <-> micro-sam interoperability proof (run by hand, in a venv that has micro-sam).

Setup (outside the repository, ~2 min)::

    python3 -m venv /work/msam-venv
    /work/msam-venv/bin/pip install torch==2.13.0
    /work/msam-venv/bin/pip install -c constraints.txt micro-sam==1.8.14
    /work/msam-venv/bin/python benchmarks/microsam_interop.py --workdir /tmp/interop [--export]

samzoo itself is imported from this checkout's ``src`` (no install needed; its dependencies are a
subset of micro-sam's). micro-sam imports torchvision, so the torchvision fix is applied first,
loaded by file path.

What it checks (vit_b, random init -- no pretrained weights can be downloaded here):

(a) samzoo -> micro-sam: a samzoo checkpoint loads with ``get_predictor_and_decoder`` (micro-sam's
    own loader for SAM + AIS decoder); on the same image both compute the image embedding, the AIS
    decoder outputs, a box-prompt mask and micro-sam's / samzoo's watershed; the differences are
    printed. The image is 768 x 1024 so no resizing happens (SAM's PIL resize and samzoo's torch
    resize differ by design) and it is handed to both predictors as uint8 RGB (micro-sam's own
    per-channel normalisation may change pixel values by one grey level).
(b) micro-sam -> samzoo: SAM and UNETR built by micro-sam, written with micro-sam's
    ``export_instance_segmentation_model``; ``samzoo.load_checkpoint`` reads it and every tensor is
    compared.
(c) with ``--export``: micro-sam's ``export_sam_model`` (BioImage.IO packaging) on the vit_b
    checkpoint, timed in a subprocess under ``/usr/bin/time -v`` (wall time, peak RSS).

Prints a JSON summary at the end (also written to WORKDIR/interop.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _torchvision_fix() -> str:
    spec = importlib.util.spec_from_file_location("_samzoo_tv_fix", REPO / "src" / "samzoo" / "_torchvision_fix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ensure_torchvision_importable()


TV_STATUS = _torchvision_fix()
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import samzoo  # noqa: E402,F401
from samzoo.families.microsam.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from samzoo.families.microsam.config import preset  # noqa: E402
from samzoo.families.microsam.model import SamzooModel  # noqa: E402
from samzoo.families.microsam.ais import AisParams, watershed_from_prediction  # noqa: E402
from samzoo.families.microsam.predictor import Predictor  # noqa: E402

from micro_sam.instance_segmentation import (  # noqa: E402
    InstanceSegmentationWithDecoder,
    get_predictor_and_decoder,
    get_unetr,
)


class Timer:
    def __init__(self):
        self.times: dict[str, float] = {}

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = round(time.perf_counter() - self.start, 3)
                print(f"  {name}: {timer.times[name]:.2f} s", flush=True)

        return _Ctx()


def test_image(shape=(768, 1024), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image of bright disks on a dark background, and its labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for i in range(40):
        cy, cx, r = rng.integers(40, shape[0] - 40), rng.integers(40, shape[1] - 40), rng.integers(12, 35)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i + 1
    gray = (labels > 0) * 170.0 + 40 + rng.normal(0, 12, shape)
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    gray[0, 0], gray[-1, -1] = 0, 255  # full range in every channel
    return np.stack([gray] * 3, axis=-1), labels


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def part_a(work: Path, timer: Timer, results: dict) -> Path:
    print("(a) samzoo checkpoint -> micro-sam", flush=True)
    torch.manual_seed(0)
    with timer("a_build_samzoo_vit_b"):
        model = SamzooModel(preset("vit_b"))
    ckpt = work / "samzoo_vit_b.pt"
    with timer("a_save_samzoo_checkpoint"):
        save_checkpoint(model, ckpt)
    with timer("a_microsam_get_predictor_and_decoder"):
        msam_predictor, msam_decoder = get_predictor_and_decoder("vit_b", ckpt, device="cpu")

    image, labels = test_image()
    with timer("a_samzoo_embedding"):
        predictor = Predictor(model).set_image(image)
        ours = predictor.get_image_embedding().cpu().numpy()
    with timer("a_microsam_embedding"):
        msam_predictor.set_image(image)
        theirs = msam_predictor.get_image_embedding().cpu().numpy()
    with timer("a_samzoo_ais_decoder"):
        our_maps = predictor.ais_outputs()
    # micro-sam runs its decoder as get_decoder returns it: in training mode, so the BatchNorm layers
    # of deconv1..4 normalise with the statistics of the current image (and overwrite their running
    # statistics on every call); samzoo, like any eval-mode PyTorch consumer, uses the stored running
    # statistics. Both are measured -- eval mode first, before a training-mode call changes the buffers.
    decoder_training_mode = bool(msam_decoder.training)
    msam_decoder.eval()
    with timer("a_microsam_ais_decoder_eval_mode"):
        with torch.no_grad():
            their_maps = msam_decoder(msam_predictor.features, tuple(msam_predictor.input_size),
                                      tuple(msam_predictor.original_size)).cpu().numpy()[0]
    msam_decoder.train(decoder_training_mode)
    with timer("a_microsam_ais_decoder_as_is"):
        with torch.no_grad():
            their_maps_as_is = msam_decoder(msam_predictor.features, tuple(msam_predictor.input_size),
                                            tuple(msam_predictor.original_size)).cpu().numpy()[0]

    ys, xs = np.nonzero(labels == labels.max())
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
    _, _, our_low = predictor.predict(boxes=box[None], multimask=False)
    _, _, their_low = msam_predictor.predict(box=box, multimask_output=False, return_logits=True)

    # watershed post-processing on the same (eval-mode) maps: micro-sam's generate() vs samzoo's.
    # The maps are handed to micro-sam's segmenter directly (its initialize() would rerun the decoder).
    segmenter = InstanceSegmentationWithDecoder(msam_predictor, msam_decoder)
    segmenter._foreground, segmenter._center_distances, segmenter._boundary_distances = their_maps
    segmenter._i, segmenter._is_initialized = None, True
    from samzoo.evaluation.metrics import mean_segmentation_accuracy

    watershed = {}
    for name, params in (("defaults", AisParams()), ("min_size_25", AisParams(min_size=25))):
        with timer(f"a_microsam_watershed_{name}"):
            their_labels = segmenter.generate(**params.to_dict())
        with timer(f"a_samzoo_watershed_{name}"):
            our_labels = watershed_from_prediction(their_maps, params)
        watershed[name] = {"objects_microsam": int(len(np.unique(their_labels)) - 1),
                           "objects_samzoo": int(len(np.unique(our_labels)) - 1),
                           "msa_between_them": round(float(mean_segmentation_accuracy(their_labels, our_labels)[0]), 4)}
    results["a"] = {
        "embedding_shape": list(ours.shape),
        "embedding_max_abs_diff": max_abs(ours, theirs),
        "embedding_abs_max": float(np.abs(theirs).max()),
        "microsam_decoder_in_training_mode": decoder_training_mode,
        "ais_outputs_max_abs_diff_vs_microsam_as_is": max_abs(our_maps, their_maps_as_is),
        "ais_outputs_max_abs_diff_vs_microsam_eval_mode": max_abs(our_maps, their_maps),
        "box_prompt_lowres_logits_max_abs_diff": max_abs(our_low[0], their_low[0]),
        "box_prompt_lowres_logits_abs_max": float(np.abs(their_low[0]).max()),
        "watershed_on_random_model_maps": watershed,
    }
    print(json.dumps(results["a"], indent=1), flush=True)
    del msam_predictor, msam_decoder, segmenter
    return ckpt


def part_b(work: Path, timer: Timer, results: dict) -> None:
    print("(b) micro-sam checkpoint -> samzoo", flush=True)
    from segment_anything import sam_model_registry
    from micro_sam.training.training import export_instance_segmentation_model

    torch.manual_seed(1)
    with timer("b_build_microsam_sam_and_unetr"):
        sam = sam_model_registry["vit_b"]()
        unetr = get_unetr(sam.image_encoder, device="cpu")
    plain = work / "microsam_initial_sam.pt"
    trained = work / "microsam_unetr_trained.pt"
    exported = work / "microsam_vit_b_with_decoder.pt"
    torch.save(sam.state_dict(), plain)
    torch.save({"model_state": unetr.state_dict()}, trained)
    with timer("b_microsam_export_instance_segmentation_model"):
        export_instance_segmentation_model(trained, exported, "vit_b", initial_checkpoint_path=plain)
    with timer("b_samzoo_load_checkpoint"):
        model = load_checkpoint(exported)
    with timer("b_samzoo_load_plain_sam"):
        plain_model = load_checkpoint(plain)

    ref_sam = sam.state_dict()
    ours_sam = model.sam.state_dict()
    sam_equal = set(ref_sam) == set(ours_sam) and all(torch.equal(ref_sam[k], ours_sam[k]) for k in ref_sam)
    ref_dec = OrderedDict((k, v) for k, v in unetr.state_dict().items() if not k.startswith("encoder"))
    ours_dec = OrderedDict((k, v) for k, v in model.ais_decoder.state_dict().items() if not k.startswith("encoder"))
    dec_equal = set(ref_dec) == set(ours_dec) and all(torch.equal(ref_dec[k], ours_dec[k]) for k in ref_dec)
    plain_equal = all(torch.equal(ref_sam[k], v) for k, v in plain_model.sam.state_dict().items())
    results["b"] = {
        "flavour_config_inferred": model.config.name,
        "sam_tensors": len(ref_sam),
        "sam_weights_identical": bool(sam_equal),
        "decoder_tensors": len(ref_dec),
        "decoder_weights_identical": bool(dec_equal),
        "plain_sam_checkpoint_identical": bool(plain_equal),
        "has_ais_decoder": model.has_ais_decoder,
    }
    print(json.dumps(results["b"], indent=1), flush=True)


def part_d(results: dict) -> None:
    """Watershed post-processing alone: samzoo's vs micro-sam's (torch-em + bioimage-cpp) on
    decoder-like maps of 60 touching disks (ideal maps plus Gaussian noise)."""
    print("(d) AIS watershed: samzoo vs micro-sam on synthetic decoder maps", flush=True)
    from scipy import ndimage
    from torch_em.util.segmentation import watershed_from_center_and_boundary_distances
    import bioimage_cpp as bic

    from samzoo.evaluation.metrics import mean_segmentation_accuracy
    from samzoo.families.microsam.ais import watershed_from_decoder_outputs

    rng = np.random.default_rng(0)
    shape = (512, 512)
    yy, xx = np.indices(shape)
    centers, radii = rng.integers(20, 492, (60, 2)), rng.integers(10, 25, 60)
    d = np.stack([np.hypot(yy - cy, xx - cx) / r for (cy, cx), r in zip(centers, radii)])
    gt = np.where(d.min(0) <= 1, d.argmin(0) + 1, 0)
    fg = (gt > 0).astype(np.float32)
    center, boundary = np.ones(shape, np.float32), np.ones(shape, np.float32)
    for i in np.unique(gt[gt > 0]):
        ys, xs = np.nonzero(gt == i)
        dc = np.hypot(ys - ys.mean(), xs - xs.mean())
        center[ys, xs] = dc / max(dc.max(), 1e-6)
        inner = ndimage.distance_transform_edt(gt == i)[ys, xs]
        boundary[ys, xs] = 1 - inner / inner.max()
    rows = []
    for noise in (0.0, 0.1, 0.3):
        def noisy(a):
            return np.clip(a + rng.normal(0, noise, shape), 0, 1).astype(np.float32)
        f, c, b = noisy(fg), noisy(center), noisy(boundary)
        for params in (AisParams(), AisParams(min_size=25), AisParams(foreground_smoothing=0, distance_smoothing=0)):
            ours = watershed_from_decoder_outputs(f, c, b, params)
            f2 = bic.filters.gaussian_smoothing(f, params.foreground_smoothing) if params.foreground_smoothing else f
            theirs = watershed_from_center_and_boundary_distances(
                c, b, f2, params.center_distance_threshold, params.boundary_distance_threshold,
                params.foreground_threshold, params.distance_smoothing, params.min_size)
            rows.append({"noise": noise, "min_size": params.min_size, "smoothing": params.distance_smoothing > 0,
                         "objects_samzoo": int(len(np.unique(ours)) - 1),
                         "objects_microsam": int(len(np.unique(theirs)) - 1),
                         "msa_between_them": round(float(mean_segmentation_accuracy(theirs, ours)[0]), 4)})
    results["d"] = rows
    for row in rows:
        print("  ", row, flush=True)


EXPORT_CODE = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("tvfix", {fix!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.ensure_torchvision_importable()
import numpy as np
from micro_sam.bioimageio.model_export import export_sam_model
sys.path.insert(0, {src!r})
data = np.load({npz!r})
t = time.perf_counter()
export_sam_model(data["image"], data["labels"], model_type="vit_b", name="samzoo-interop-vit_b",
                 output_path={out!r}, checkpoint_path={ckpt!r})
print("EXPORT_SECONDS", time.perf_counter() - t)
"""


def part_c(work: Path, ckpt: Path, results: dict) -> None:
    print("(c) micro-sam export_sam_model on the vit_b checkpoint (subprocess, /usr/bin/time -v)", flush=True)
    image, labels = test_image((512, 512), seed=2)
    npz = work / "export_input.npz"
    np.savez(npz, image=image, labels=labels)
    out = work / "microsam_export_vit_b.zip"
    code = EXPORT_CODE.format(fix=str(REPO / "src" / "samzoo" / "_torchvision_fix.py"), src=str(REPO / "src"),
                              npz=str(npz), out=str(out), ckpt=str(ckpt))
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - started
    stats = {}
    for line in proc.stderr.splitlines():
        line = line.strip()
        if line.startswith("Maximum resident set size"):
            stats["peak_rss_gb"] = round(int(line.split(":")[1]) / 1024 ** 2, 2)
        elif line.startswith("Elapsed (wall clock) time"):
            stats["time_v_wall"] = line.split(": ", 1)[1]
        elif line.startswith("User time (seconds)"):
            stats["user_cpu_s"] = float(line.split(":")[1])
        elif line.startswith("System time (seconds)"):
            stats["system_cpu_s"] = float(line.split(":")[1])
    inner = [l for l in proc.stdout.splitlines() if l.startswith("EXPORT_SECONDS")]
    results["c"] = {
        "returncode": proc.returncode,
        "process_wall_s": round(wall, 1),
        "export_call_s": round(float(inner[0].split()[1]), 1) if inner else None,
        "zip_mb": round(out.stat().st_size / 1e6, 1) if out.exists() else None,
        **stats,
    }
    if proc.returncode:
        results["c"]["stderr_tail"] = proc.stderr[-2000:]
    print(json.dumps(results["c"], indent=1), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/samzoo-interop")
    parser.add_argument("--export", action="store_true", help="also time micro-sam's export_sam_model")
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    from importlib.metadata import version
    results: dict = {"micro_sam": version("micro_sam"), "torch": torch.__version__,
                     "torchvision_fix": TV_STATUS, "torch_threads": torch.get_num_threads()}
    ckpt = work / "samzoo_vit_b.pt"
    if not args.skip_a:
        ckpt = part_a(work, timer, results)
    elif not ckpt.exists():
        torch.manual_seed(0)
        save_checkpoint(SamzooModel(preset("vit_b")), ckpt)
    if not args.skip_b:
        part_b(work, timer, results)
    part_d(results)
    if args.export:
        part_c(work, ckpt, results)
    results["times_s"] = timer.times
    (work / "interop.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
