"""Inference speed of samzoo beside segment-anything's ``SamPredictor`` on the same weights.

    python benchmarks/bench_inference.py [--size 1024] [--repeats 2] [--threads N] [--cpu-time] [--no-default]
        [--int8] [--bf16] [--embedding-only] [--json results/FILE.json]

On a shared, oversubscribed machine use ``--threads 1 --cpu-time``: wall times there mostly
measure waiting for a core (and OpenMP's spinning threads make 2-thread runs erratic), while the
CPU time of one thread measures the work.

For vit_b (random weights, ``SamzooModel(preset("vit_b"), with_ais_decoder=True)``) and, when its
checkpoint is installed, samzoo's default model, on one uint8 RGB image of ``--size`` px:

* set_image: ``Predictor.set_image`` vs ``SamPredictor.set_image`` (everything the user waits
  for: validation, normalisation, resize, encoder), interleaved; times are the best of
  ``--repeats``, the ratio is the median of the per-repeat ratios (robust to load spikes). When
  the reference is fed samzoo's preprocessed image (see below) its time excludes normalisation and
  resizing, so this row then favours the reference;
* image encoder network only: both ``image_encoder`` modules on the identical input tensor;
* prompt decode: one point (3 masks) and one box, mean over ``--decode-repeats`` calls;
* AIS: samzoo's decoder pass and watershed (segment-anything has no AIS; no ratio).
* ``--bf16``: likewise samzoo with ``--precision bfloat16`` (the float32 model under CPU autocast;
  oneDNN runs the linears on AMX / AVX-512 BF16 where the CPU has them).
* ``--int8``: a third side in the same interleaved set_image loop, samzoo with
  ``--precision int8`` (``quantize_int8``: the ViT linears dynamically quantised), plus the
  embedding's max difference to float32 (int8 is not held to the 1e-3 tolerance: it is an
  approximation; its labels are checked by mSA in tests/test_quantization.py).
  ``--embedding-only`` stops after the set_image rows (the part the speed targets are about).

The reference is segment-anything's own ``Sam`` with its reference attention: for vit_b
``segment_anything.build_sam_vit_b()`` with samzoo's state dict loaded; for other architectures
(e.g. the default model) samzoo's builder with the attention blocks switched back to
segment-anything's ``Attention`` class. Both get the same encoder input: a uint8 image whose
longest side equals the model's ``img_size`` with ``minmax`` normalisation goes through
``SamPredictor.set_image`` unchanged (its PIL resize is the identity); otherwise the reference is
fed samzoo's normalised, resized image via ``set_torch_image``. Outputs must agree within 1e-3
(embeddings, low-res mask logits) and masks must be identical up to pixels whose logit is within
1e-3 of the threshold; the script exits 1 if not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import samzoo  # noqa: F401  (first: torchvision fix)

import numpy as np
import torch
import torch.nn.functional as F

TOLERANCE = 1e-3
TARGET_EMBEDDING_RATIO = 0.6
TARGET_FAST_CPU_RATIO = 0.35


@dataclass
class Row:
    model: str
    step: str
    ours: float
    reference: float | None = None
    paired_ratio: float | None = None  # median of per-repeat ratios (robust to load spikes)

    @property
    def ratio_value(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        return None if self.reference is None else self.ours / self.reference

    @property
    def ratio(self) -> str:
        return "-" if self.ratio_value is None else f"{self.ratio_value:.2f}x"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    notes: dict[str, float] = field(default_factory=dict)

    def check(self, what: str, ok: bool, detail: str) -> None:
        self.checks.append((what, bool(ok), detail))


def sample_image(size: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB nuclei-like picture: bright blurred disks on a noisy dark background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:size, :size]
    image = np.full((size, size), 25.0)
    for _ in range(size // 8):
        r, c, radius = rng.integers(0, size), rng.integers(0, size), rng.integers(8, 24)
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = rng.uniform(120, 230)
    image += rng.normal(0, 8, image.shape)
    gray = np.clip(image, 0, 255).astype(np.uint8)
    return np.stack([gray, gray, (gray * 0.8).astype(np.uint8)], axis=-1)


def reference_sam(model):
    """segment-anything's Sam with its reference attention and the model's weights."""
    from segment_anything import build_sam_vit_b
    from segment_anything.modeling.image_encoder import Attention

    from samzoo.families.microsam.config import PRESETS
    from samzoo.families.microsam.fast_attention import FastAttention
    from samzoo.families.microsam.sam import build_sam

    ignore = {"name", "ais_decoder", "ais_initial_features", "normalization"}
    mine, vit_b = model.config.to_dict(), PRESETS["vit_b"].to_dict()
    if all(mine[k] == vit_b[k] for k in vit_b if k not in ignore):
        reference = build_sam_vit_b()
    else:
        reference = build_sam(model.config)
        for module in reference.modules():
            if type(module) is FastAttention:
                module.__class__ = Attention
    reference.load_state_dict(model.sam.state_dict())
    assert not any(type(m) is FastAttention for m in reference.modules())
    return reference.eval()


CLOCK = time.perf_counter  # --cpu-time switches to time.process_time (see main)


def timed(fn, *args, **kwargs):
    start = CLOCK()
    result = fn(*args, **kwargs)
    return CLOCK() - start, result


def bench_model(name: str, model, image: np.ndarray, report: Report, *, repeats: int, decode_repeats: int,
                int8: bool = False, bf16: bool = False, embedding_only: bool = False) -> None:
    from segment_anything import SamPredictor

    from samzoo.families.microsam.ais import watershed_from_decoder_outputs
    from samzoo.families.microsam.segment import resolve_ais_params
    from samzoo.families.microsam.predictor import Predictor

    size = image.shape[0]
    reference = SamPredictor(reference_sam(model))
    ours = Predictor(model)
    identity_input = (image.dtype == np.uint8 and max(image.shape[:2]) == model.config.img_size
                      and model.config.normalization == "minmax")

    def set_reference():
        if identity_input:
            reference.set_image(image)
            return
        resized, _ = _our_resized_input(ours, model)
        with torch.no_grad():
            reference.set_torch_image(resized, image.shape[:2])

    # encoder, interleaved so that load changes hit both sides alike; untiled on purpose (the
    # reference cannot tile), so the default model sees the same resized image on both sides
    ours_times, ref_times = [], []
    fast_sides: dict[str, tuple[Predictor, object]] = {}  # precision -> (predictor, autocast context)
    if int8:
        from samzoo.families.microsam.quantization import quantize_int8

        seconds, quantized = timed(quantize_int8, model)
        print(f"  {name}: quantize_int8 {seconds:.2f} s", file=sys.stderr)
        fast_sides["int8"] = (Predictor(quantized), contextlib.nullcontext)
    if bf16:  # what segment(precision="bfloat16") does: the float32 model under CPU autocast
        fast_sides["bfloat16"] = (Predictor(model), lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    fast_times: dict[str, list[float]] = {k: [] for k in fast_sides}
    for _ in range(repeats):
        seconds, _ = timed(ours.set_image, image, tile_shape=image.shape[:2])
        ours_times.append(seconds)
        for precision, (predictor, context) in fast_sides.items():
            with context():
                seconds, _ = timed(predictor.set_image, image, tile_shape=image.shape[:2])
            fast_times[precision].append(seconds)
        seconds, _ = timed(set_reference)
        ref_times.append(seconds)
        print(f"  {name}: set_image samzoo {ours_times[-1]:.2f} s, "
              + "".join(f"samzoo {k} {v[-1]:.2f} s, " for k, v in fast_times.items())
              + f"segment-anything {ref_times[-1]:.2f} s", file=sys.stderr)
    report.rows.append(Row(name, f"set_image ({size}x{size})", min(ours_times), min(ref_times),
                           float(np.median(np.array(ours_times) / np.array(ref_times)))))
    for precision, times in fast_times.items():
        report.rows.append(Row(name, f"set_image {precision} ({size}x{size})", min(times), min(ref_times),
                               float(np.median(np.array(times) / np.array(ref_times)))))
        report.rows.append(Row(name, f"set_image {precision} / samzoo float32", min(times), min(ours_times),
                               float(np.median(np.array(times) / np.array(ours_times)))))
        emb, emb32 = fast_sides[precision][0].get_image_embedding().float(), ours.get_image_embedding()
        report.notes[f"{name} {precision} embedding max |diff| to float32"] = float((emb - emb32).abs().max())
        report.notes[f"{name} float32 embedding max |value|"] = float(emb32.abs().max())
    fast_sides.clear()
    if embedding_only:
        emb_ours, emb_ref = ours.get_image_embedding(), reference.get_image_embedding()
        diff = float((emb_ours - emb_ref).abs().max())
        report.check(f"{name} embedding", diff <= TOLERANCE, f"max |diff| {diff:.2e}")
        return

    # the networks alone, on the identical preprocessed tensor (isolates the attention)
    network_input, _ = model.preprocess(_our_resized_input(ours, model)[0])
    ours_net, ref_net = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            seconds, _ = timed(model.sam.image_encoder, network_input)
            ours_net.append(seconds)
            seconds, _ = timed(reference.model.image_encoder, network_input)
            ref_net.append(seconds)
            print(f"  {name}: image encoder samzoo {ours_net[-1]:.2f} s, segment-anything {ref_net[-1]:.2f} s",
                  file=sys.stderr)
    report.rows.append(Row(name, "image encoder network only", min(ours_net), min(ref_net),
                           float(np.median(np.array(ours_net) / np.array(ref_net)))))

    emb_ours, emb_ref = ours.get_image_embedding(), reference.get_image_embedding()
    diff = float((emb_ours - emb_ref).abs().max())
    report.check(f"{name} embedding", diff <= TOLERANCE, f"max |diff| {diff:.2e}")

    # prompts: one point (multimask) and one box
    point = np.array([[size * 0.37, size * 0.61]])
    box = np.array([size * 0.2, size * 0.3, size * 0.45, size * 0.5])
    prompts = [
        ("prompt decode (1 point, 3 masks)", dict(points=point, point_labels=[1]),
         dict(point_coords=point, point_labels=np.array([1]), multimask_output=True)),
        ("prompt decode (1 box)", dict(boxes=box),
         dict(box=box, multimask_output=False)),
    ]
    for step, ours_kwargs, ref_kwargs in prompts:
        ours.predict(**ours_kwargs)  # warm-up
        reference.predict(**ref_kwargs)
        t_ours = t_ref = 0.0
        for _ in range(decode_repeats):
            seconds, (masks, scores, low) = timed(ours.predict, **ours_kwargs)
            t_ours += seconds
            seconds, (ref_masks, ref_scores, ref_low) = timed(reference.predict, **ref_kwargs)
            t_ref += seconds
        report.rows.append(Row(name, step, t_ours / decode_repeats, t_ref / decode_repeats))
        low_diff = float(np.abs(low - ref_low).max())
        with torch.no_grad():
            ref_logits = reference.model.postprocess_masks(torch.as_tensor(ref_low)[None], reference.input_size,
                                                           reference.original_size)[0].numpy()
        differing = masks != ref_masks
        near_threshold = np.abs(ref_logits) <= TOLERANCE
        ok = low_diff <= TOLERANCE and not (differing & ~near_threshold).any()
        report.check(f"{name} {step.split('(')[1][:-1]}", ok,
                     f"low-res logits max |diff| {low_diff:.2e}, {int(differing.sum())} mask pixels differ, "
                     f"IoU scores max |diff| {float(np.abs(scores - ref_scores).max()):.2e}")

    # AIS (samzoo only)
    if model.has_ais_decoder:
        seconds, maps = timed(ours.ais_outputs)
        report.rows.append(Row(name, "AIS decoder", seconds))
        params = resolve_ais_params(model)
        seconds, labels = timed(watershed_from_decoder_outputs, maps[0], maps[1], maps[2], params)
        report.rows.append(Row(name, "AIS watershed post-processing", seconds))
    del reference


def _our_resized_input(predictor, model) -> tuple[torch.Tensor, tuple[int, int]]:
    """samzoo's normalised image resized like SamzooModel.preprocess (before mean/std, padding)."""
    from samzoo.families.microsam.model import resized_shape

    image = torch.from_numpy(np.ascontiguousarray(predictor._image)).permute(2, 0, 1)[None]
    h, w = resized_shape(image.shape[-2], image.shape[-1], model.config.img_size)
    if (h, w) != tuple(image.shape[-2:]):
        image = F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)
    return image, (h, w)


def print_report(report: Report) -> None:
    header = f"{'model':<16} {'step':<36} {'samzoo (s)':>11} {'segment-anything (s)':>21} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for row in report.rows:
        reference = "-" if row.reference is None else f"{row.reference:.3f}"
        print(f"{row.model:<16} {row.step:<36} {row.ours:>11.3f} {reference:>21} {row.ratio:>7}")
    print()
    for what, ok, detail in report.checks:
        print(f"{'OK  ' if ok else 'FAIL'} {what}: {detail}")
    for what, value in report.notes.items():
        print(f"     {what}: {value:.4g}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2, help="encoder runs per side (best is reported)")
    parser.add_argument("--decode-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="measure process CPU time instead of wall time: on a shared, oversubscribed machine "
                             "wall times mostly measure waiting; use with --threads 1 (OpenMP threads spin)")
    parser.add_argument("--no-default", action="store_true", help="skip the shipped default model")
    parser.add_argument("--int8", action="store_true", help="also time samzoo with --precision int8")
    parser.add_argument("--bf16", action="store_true", help="also time samzoo with --precision bfloat16 (CPU autocast; "
                                                            "fast on CPUs with AVX-512 BF16 / AMX)")
    parser.add_argument("--embedding-only", action="store_true", help="only the set_image rows")
    parser.add_argument("--json", default=None, help="write rows, checks and notes to this JSON file")
    parser.add_argument("--arch", default="vit_b", help="random-weight architecture to compare (default vit_b; "
                                                        "'test' for a quick smoke run)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time

    from samzoo import SamzooModel, preset
    from samzoo.errors import ModelNotFoundError

    image = sample_image(args.size)
    report = Report()
    clock = "process CPU time" if args.cpu_time else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {image.shape} {image.dtype}, "
          f"{clock}", file=sys.stderr)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {clock}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    torch.manual_seed(0)
    random_model = SamzooModel(preset(args.arch), with_ais_decoder=True)
    bench_model(f"{args.arch} (random)", random_model, image, report, repeats=args.repeats,
                decode_repeats=args.decode_repeats, int8=args.int8, bf16=args.bf16,
                embedding_only=args.embedding_only)
    del random_model
    if not args.no_default:
        try:
            from samzoo.api import load_model

            default = load_model(None)
        except ModelNotFoundError as err:
            print(f"default model skipped: {err}", file=sys.stderr)
        else:
            label = str(default.metadata.get("name") or default.config.name)
            bench_model(label[:16], default, image, report, repeats=args.repeats,
                        decode_repeats=args.decode_repeats, int8=args.int8, bf16=args.bf16,
                embedding_only=args.embedding_only)

    print_report(report)
    encoder = next(r for r in report.rows if r.step.startswith("set_image"))
    ratio = encoder.ratio_value
    print(f"\n{args.arch} set_image (embedding): samzoo/segment-anything = {ratio:.2f}x (target <= {TARGET_EMBEDDING_RATIO}x): "
          f"{'met' if ratio <= TARGET_EMBEDDING_RATIO else 'NOT met'}")
    for precision in ("int8", "bfloat16"):
        fast = next((r for r in report.rows if r.step.startswith(f"set_image {precision} (")), None)
        if fast is not None:
            print(f"{args.arch} set_image {precision}: samzoo/segment-anything = {fast.ratio_value:.2f}x (target <= "
                  f"{TARGET_FAST_CPU_RATIO}x): {'met' if fast.ratio_value <= TARGET_FAST_CPU_RATIO else 'NOT met'}")
    if args.json:
        import json

        payload = {"argv": sys.argv[1:], "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "clock": clock, "load_average_end": os.getloadavg(),
                   "rows": [{"model": r.model, "step": r.step, "samzoo_s": r.ours, "reference_s": r.reference,
                             "ratio": r.ratio_value} for r in report.rows],
                   "checks": [{"what": w, "ok": ok, "detail": d} for w, ok, d in report.checks],
                   "notes": report.notes}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 0 if all(ok for _, ok, _ in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
