"""Turn a samzoo / micro-sam / SAM model into BioImage.IO 0.5 model packages (zip).

Package kinds (``package_model`` returns ``{kind: zip path}``):

``ais``
    image -> instance labels. The seeded watershed runs *inside* the model's ``forward``
    (:class:`~samzoo.families.microsam.bioimageio_architecture.AisInstanceSegmentation`): bioimageio.core 0.11 applies
    a ``custom`` post-processing op to one output tensor at a time and requires it to keep that
    tensor's shape (``CustomProcessing.get_output_shape`` returns the input shape, which blockwise
    prediction and the output-shape checks rely on), while the watershed must read three decoder
    channels and return one label channel. Weights: ``pytorch_state_dict`` only -- TorchScript
    cannot hold the (scipy) watershed, and every declared format must reproduce the same labels.

Every ``pytorch_state_dict`` uses the architecture source file shipped in the package
(:mod:`samzoo.families.microsam.bioimageio_architecture`, torch/numpy/scipy only), so a package runs in any
environment with what its ``environment.yaml`` declares; samzoo is not needed.
``ais_network`` (when the model has an AIS decoder)
    one S x S block -> the decoder's three maps (foreground, center distance, boundary distance),
    the network part of AIS for consumers that cannot run Python: one input, one output, only
    spec pre-processing (the 0..255 scaling), weights ``pytorch_state_dict`` plus ``torchscript``
    and ``onnx`` when asked for. The output declares a halo of S/8, so blockwise consumers run
    any image at native resolution, as samzoo tiles it.
``interactive``
    image + optional box / point / mask prompts and optional precomputed embeddings -> masks,
    scores, embeddings (micro-sam's tensor layout). Weights: ``pytorch_state_dict`` (the prompt
    path has data-dependent control flow over optional inputs, which tracing cannot capture).

Cost: the image encoder runs once on the sample (plus once per S x S block for ``ais_network``'s
test tensor, its trace and its ONNX export); the AIS decoder runs once, with its full-resolution
head in row strips (``samzoo.families.microsam.ais_decoder.decode_embedding``). The weights file is written
once and shared by all packages; files are hashed once; zips are stored, not deflated.
Everything is written under a temp dir and each zip is moved into place with ``os.replace`` only
when all packages succeeded, so a failure never leaves a partial zip at the destination.

Inputs are validated before the model is loaded: formats, output folder, model card (every
missing field at once), sample image. Batch size is 1 in every package (like micro-sam's);
bioimageio.core casts the image to float32 before the model (its ``ensure_dtype``), so a package
equals ``samzoo.segment(image.astype(float32))``; for ``percentile`` models that is the same as
the original dtype, for ``minmax`` (micro-sam) models uint8 images are then min-max scaled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ....errors import InputError, SamzooError
from ....io import read_image
from ..ais_decoder import AIS_CHANNELS, decode_embedding
from ..model import SamzooModel
from ....packaging import metadata as md
from .. import bioimageio_architecture as arch
from ....packaging.card_files import stage_card_files
from ....packaging.samples import synthetic_sample
from .weights import (
    normalized_input,
    packaged_state,
    prompt_masks,
)

log = logging.getLogger(__name__)

FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
KINDS = ("ais", "ais_network", "interactive")
ARCH_SOURCE = Path(arch.__file__)
ARCH_FILE = "microsam_architecture.py"
WEIGHTS_NAME = "weights.pt"
TORCHSCRIPT_NAME = "ais_network.torchscript.pt"
ONNX_NAME = "ais_network.onnx"
SCALE_RANGE_EPS = 1e-6  # bioimageio's ScaleRangeKwargs.eps default

# What a package's environment file asks for: only what the architecture file imports, at the
# versions it is written for (bioimage.io's shared runtime: torch 2.5.1, numpy 1.26.4), plus the
# pydantic pin bioimageio.spec 0.5.12 (used by the newest bioimageio.core, 0.11) needs: pydantic
# 2.14 breaks it on every description with local files.
ENVIRONMENT = """name: samzoo-microsam
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python>=3.10
  - pytorch>=2.5
  - numpy>=1.26
  - scipy>=1.11
  - pip
  - pip:
      - pydantic<2.14
"""

MAX_PROMPT_OBJECTS = 3
SAMPLE_SIDE = 256

# Reproduction tolerances (config.bioimageio.reproducibility_tolerance), reasoned:
# * labels / binary masks: same platform reproduces them exactly; on another CPU float32 rounding
#   of the network (different summation order in BLAS kernels) can flip pixels that sit exactly on a
#   watershed line or on the mask logit-0 contour. Values must match exactly (abs/rel 0); at most
#   100 elements per million (the spec's default; 6 px of a 256x256 test image) may differ.
# * sigmoid maps in [0, 1] and IoU scores: rounding differences of ~1e-6 per layer stay far below
#   1e-4 absolute after a sigmoid (slope <= 1/4); the ais_network package additionally lets
#   bioimageio.core do the 0..255 scaling (scale_range, eps=1e-6), which moves the input by
#   <1e-5 relative, so 1e-3 absolute / relative.
# * embeddings (LayerNorm outputs, |x| ~ 1): 1e-3 absolute + 1e-3 relative.
LABEL_TOLERANCE = dict(relative_tolerance=0.0, absolute_tolerance=0.0, mismatched_elements_per_million=100)
MAP_TOLERANCE = dict(relative_tolerance=1e-3, absolute_tolerance=1e-3, mismatched_elements_per_million=0)
SCORE_TOLERANCE = dict(relative_tolerance=1e-3, absolute_tolerance=1e-4, mismatched_elements_per_million=0)
EMBEDDING_TOLERANCE = dict(relative_tolerance=1e-3, absolute_tolerance=1e-3, mismatched_elements_per_million=0)


# --------------------------------------------------------------------------------------------
# input validation (all cheap, all before the model runs)
# --------------------------------------------------------------------------------------------

def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",")]
    formats = tuple(dict.fromkeys(str(f) for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown weight format(s) {unknown}; supported: {', '.join(FORMATS)}")
    if "pytorch_state_dict" not in formats:
        raise InputError(
            "formats must include pytorch_state_dict: the AIS watershed and the prompt handling run in "
            "Python; torchscript and onnx are added where the network allows it"
        )
    return formats


def _check_outdir(outdir: str | os.PathLike) -> Path:
    outdir = Path(outdir).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output path {outdir} exists and is not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output folder {outdir}: {err.strerror or err}") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise InputError(f"output folder {outdir} is not writable")
    return outdir




def _default_sample(side: int = SAMPLE_SIDE) -> tuple[np.ndarray, np.ndarray | None, str]:
    from importlib import resources

    shipped = Path(str(resources.files("samzoo") / "data" / "sample_nuclei.tif"))
    if shipped.is_file():
        return read_image(shipped), None, "samzoo's shipped sample image sample_nuclei.tif"
    image, labels = synthetic_sample(side)
    return image, labels, "a synthetic nuclei image (samzoo.packaging.samples.synthetic_sample)"


def _as_chw(image: np.ndarray) -> np.ndarray:
    """A 2D sample as (C, H, W) with C = 1 (grayscale) or 3 (RGB)."""
    from ....segmentation.preprocess import MIN_SIDE

    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise InputError(f"sample image has unsupported dtype {image.dtype}")
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4) and image.shape[0] > 4:
        image = np.moveaxis(image[..., :3], -1, 0)
    elif image.ndim == 3 and image.shape[0] == 4:
        image = image[:3]
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise InputError(
            f"sample image must be a 2D grayscale or RGB image, got shape {np.asarray(image).shape}"
        )
    if min(image.shape[1:]) < MIN_SIDE:
        raise InputError(f"sample image is too small ({image.shape[1]}x{image.shape[2]}); each side must be >= {MIN_SIDE}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError("sample image contains NaN or infinite values")
    return image


def _prepare_sample(sample_image, img_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    if sample_image is None:
        image, labels, what = _default_sample(min(SAMPLE_SIDE, img_size or SAMPLE_SIDE))
    elif isinstance(sample_image, (str, os.PathLike)):
        image, labels, what = read_image(sample_image), None, f"the sample image {Path(sample_image).name}"
    elif isinstance(sample_image, tuple) and len(sample_image) == 2:
        image, labels, what = np.asarray(sample_image[0]), np.asarray(sample_image[1]), "the given sample image"
    else:
        image, labels, what = np.asarray(sample_image), None, "the given sample image"
    return _as_chw(image), labels, what


def _resolve_card(card, model_meta: Mapping[str, Any] | None, fallback_name: str) -> dict[str, Any]:
    if card is None:
        return md.validate_card(md.default_card(model_meta or {}, fallback_name), "default card", schema=False)
    return md.checked_card(card)


# --------------------------------------------------------------------------------------------
# test data
# --------------------------------------------------------------------------------------------

def _objects_for_prompts(labels: np.ndarray, limit: int = MAX_PROMPT_OBJECTS) -> list[np.ndarray]:
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [labels == ids[i] for i in order[:limit]]


def _fallback_labels(image_chw: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    gray = image_chw.astype(np.float32).mean(0)
    if gray.max() <= gray.min():
        mask = np.zeros(gray.shape, bool)
        mask[gray.shape[0] // 4: 3 * gray.shape[0] // 4, gray.shape[1] // 4: 3 * gray.shape[1] // 4] = True
    else:
        mask = gray > threshold_otsu(gray)
    labels, _ = ndimage.label(mask)
    return labels


def make_prompts(masks: Sequence[np.ndarray], input_shape: tuple[int, int], img_size: int,
                 mask_size: int | None = None) -> dict[str, np.ndarray]:
    """Box, center point and low-res mask-logit prompts for objects (micro-sam layout)."""
    from scipy import ndimage
    import torch.nn.functional as F

    boxes, points, low_res = [], [], []
    h, w = input_shape
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
        points.append([[cx + 0.5, cy + 0.5]])
        t = torch.from_numpy(mask.astype(np.float32))[None, None]
        t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)
        t = F.pad(t, (0, img_size - w, 0, img_size - h))
        side = mask_size or img_size // 4  # SAM's low-res mask input: 4x the embedding grid
        t = F.interpolate(t, (side, side), mode="bilinear", align_corners=False)
        low_res.append(((t[0] > 0.5).float() * 16.0 - 8.0).numpy())
    return {
        "box_prompts": np.asarray(boxes, np.float32)[None],
        "point_prompts": np.asarray(points, np.float32)[None],
        "point_labels": np.ones((1, len(masks), 1), np.int64),
        "mask_prompts": np.stack(low_res).astype(np.float32)[None],
    }


# --------------------------------------------------------------------------------------------
# covers and documentation
# --------------------------------------------------------------------------------------------

def _display(image_chw: np.ndarray) -> np.ndarray:
    img = image_chw.astype(np.float32)
    lo, hi = np.percentile(img, (1, 99.8))
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    img = img.transpose(1, 2, 0)
    return np.repeat(img, 3, axis=2).astype(np.uint8) if img.shape[2] == 1 else img.astype(np.uint8)


def _own_overlay(rgb: np.ndarray, labels: np.ndarray, points=None, boxes=None) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    out = rgb.astype(np.float32).copy()
    rng = np.random.default_rng(1)
    ids = np.unique(labels[labels > 0])
    colours = rng.uniform(60, 255, size=(int(labels.max()) + 1, 3)).astype(np.float32)
    if ids.size:
        fg = labels > 0
        out[fg] = 0.55 * out[fg] + 0.45 * colours[labels[fg]]
        out[find_boundaries(labels, mode="inner")] = (255, 255, 0)
    h, w = labels.shape
    for box in boxes if boxes is not None else []:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, x1 = np.clip([x0, x1 - 1], 0, w - 1)
        y0, y1 = np.clip([y0, y1 - 1], 0, h - 1)
        out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = (0, 255, 255)
        out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = (0, 255, 255)
    r = max(2, min(h, w) // 80)
    for x, y in points if points is not None else []:
        yy, xx = np.ogrid[:h, :w]
        out[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = (255, 0, 255)
    return out.astype(np.uint8)


def _overlay(rgb: np.ndarray, labels: np.ndarray, points=None, boxes=None) -> np.ndarray:
    try:
        from ....visualize import overlay  # type: ignore[attr-defined]

        # visualize takes (x, y) like SAM; its boxes have inclusive corners
        xyxy = None if boxes is None else np.asarray(boxes, np.float64) - [0, 0, 1, 1]
        result = np.asarray(overlay(rgb, labels, points=points, boxes=xyxy))
        if result.shape[:2] == labels.shape and result.ndim == 3:
            return result[..., :3].astype(np.uint8)
    except Exception:  # visualize missing or a different convention: use the simple overlay
        pass
    return _own_overlay(rgb, labels, points, boxes)


def _write_cover(path: Path, image_chw: np.ndarray, labels: np.ndarray, points=None, boxes=None) -> Path:
    """Side by side: the image and the image with the segmentation (2:1, as bioimage.io asks)."""
    from PIL import Image

    rgb = _display(image_chw)
    both = np.concatenate([rgb, _overlay(rgb, labels, points, boxes)], axis=1)
    img = Image.fromarray(both)
    if img.width > 1024:
        img = img.resize((1024, max(1, round(1024 * img.height / img.width))), Image.BILINEAR)
    img.save(path, format="PNG", optimize=True)
    return path


def _params_table(params: Mapping[str, Any]) -> str:
    rows = ["| parameter | value |", "|---|---|"]
    rows += [f"| `{k}` | {md.format_value(v)} |" for k, v in params.items()]
    return "\n".join(rows)


def _documentation(kind: str, card: Mapping[str, Any], model: SamzooModel, ais_params: Mapping[str, Any],
                   formats: Sequence[str], sample_what: str, tolerances: Sequence[Mapping[str, Any]]) -> str:
    cfg = model.config
    title = {"ais": "automatic instance segmentation", "ais_network": "AIS network (decoder maps)",
             "interactive": "interactive (prompted) segmentation"}[kind]
    lines = [f"# {card['name']} -- {title}", "", str(card["description"]).strip(), ""]
    lines += ["## Model", "",
              f"Segment Anything ({cfg.name}: {cfg.encoder} encoder, embed dim {cfg.embed_dim}, depth {cfg.depth}, "
              f"input {cfg.img_size} px) with μSAM's UNETR decoder for automatic instance segmentation (AIS). "
              f"Images are mapped to 0..255 with the `{cfg.normalization}` method before the encoder.", ""]
    parent = card.get("parent_model")
    if parent:
        if isinstance(parent, Mapping):
            parent = ", ".join(str(v) for v in parent.values() if v)
        lines += [f"Parent model: {parent}", ""]
    data = card.get("training_data")
    if data:
        if isinstance(data, Mapping):
            text = str(data.get("description") or "")
            refs = [*map(str, data.get("ids") or []), *map(str, data.get("urls") or [])]
            text += f" ({', '.join(refs)})" if refs else ""
        else:
            text = str(data)
        lines += [f"Training data: {text.strip()}", ""]
    if kind == "ais":
        lines += ["## Inputs and outputs", "",
                  "* `image` (batch, channel, y, x): raw intensities, any size >= 8 px. The image is normalized "
                  "inside the model exactly as `samzoo.segment` does (using the dtype the array arrives in).",
                  "* `instance_labels` (batch, channel=1, y, x) uint32: 0 = background, objects 1..N.", "",
                  "The model runs the encoder, the AIS decoder and then the seeded watershed *inside* the model "
                  "(bioimageio.core 0.11 custom post-processing must keep a tensor's shape, the watershed turns "
                  "three decoder channels into one label channel). Run it without blockwise prediction (the "
                  "default of `bioimageio predict` / `bioimageio.core.predict`): like `samzoo segment`, the model "
                  f"encodes images up to {int(1.5 * cfg.img_size)} px whole and tiles larger ones itself at native "
                  f"resolution ({cfg.img_size} px blocks with a {cfg.img_size // 8} px halo), so objects are never "
                  "cut at block borders.", "",
                  "## AIS parameters", "",
                  "These are this checkpoint's tuned watershed parameters, written as the architecture's "
                  "`ais_params` keyword arguments in `rdf.yaml` (edit them there to change the defaults):", "",
                  _params_table(ais_params), ""]
    elif kind == "ais_network":
        lines += ["## Inputs and outputs", "",
                  f"* `image` (1, channel, {cfg.img_size}, {cfg.img_size}): one block of raw intensities; "
                  "pre-processing scales the whole image to 0..255 (percentiles declared in rdf.yaml) first.",
                  f"* `decoder_maps` (1, 3, {cfg.img_size}, {cfg.img_size}) float32 in [0, 1]: "
                  + ", ".join(AIS_CHANNELS) + f", with a halo of {cfg.img_size // 8} px on y and x.", "",
                  "This package is the *network part* of AIS: one input, one output, TorchScript and ONNX weights "
                  "and only standard pre-processing, for consumers that cannot run Python (deepImageJ, QuPath, "
                  f"BioEngine). SAM's encoder takes exactly {cfg.img_size} x {cfg.img_size} px, so images are run "
                  "blockwise, each block at native resolution, the declared halo cropped from every block: "
                  "`bioimageio.core.predict(model=..., inputs=..., blocksize_parameter=1)` (or any consumer's "
                  "tiling). Images smaller than one block: use the `ais` package. Such consumers paste each "
                  "block's core side by side; samzoo and the `ais` package blend the maps of overlapping blocks "
                  f"instead (`blend_weights` in `{ARCH_FILE}`), so along block seams their maps, and rarely their "
                  "labels, differ a little from a pasted result. "
                  "Instance labels come from a seeded watershed on the stitched maps "
                  f"(`watershed_from_maps` in `{ARCH_FILE}`, numpy/scipy only; the same as the `ais` package): "
                  "smooth, foreground = fg > foreground_threshold, seeds = center < center_distance_threshold and "
                  "boundary < boundary_distance_threshold inside the foreground, watershed of the boundary "
                  "distances from the seeds inside the foreground, drop objects < min_size. The tuned parameters:", "",
                  _params_table(ais_params), ""]
    else:
        g = cfg.embedding_size
        lines += ["## Inputs and outputs", "",
                  "Inputs, in this order (all but `image` optional):", "",
                  "* `image` (1, channel, y, x): raw intensities, normalized inside like `samzoo.segment`.",
                  "* `box_prompts` (1, object, 4): x_min, y_min, x_max, y_max in pixels.",
                  "* `point_prompts` (1, object, point, 2): x, y in pixels; `point_labels` (1, object, point): "
                  "1 = foreground, 0 = background, -1 = padding.",
                  f"* `mask_prompts` (1, object, 1, {4 * g}, {4 * g}): mask logits at SAM's low resolution.",
                  f"* `embeddings` (1, {cfg.prompt_embed_dim}, {g}, {g}): the `embeddings` output of an earlier call; "
                  "when given the encoder is skipped.", "",
                  "Outputs: `masks` (1, object, 1, y, x) uint8 0/1, `scores` (1, object, 1) predicted IoU, "
                  "`embeddings`. Call once with the image alone to get the embeddings, then pass them back "
                  "with each new set of prompts: only the light prompt decoder runs.", ""]
    weights = ["## Weights", "",
               f"* `pytorch_state_dict`: `{WEIGHTS_NAME}`, a flat state dict (`sam.*` = segment-anything's SAM "
               "weights, `ais_decoder.*` = micro-sam's UNETR decoder state without the shared encoder); the "
               f"architecture is `{ARCH_FILE}` in this package, which imports only torch, numpy and scipy "
               "(environment in `environment.yaml`; no samzoo needed)."]
    if kind == "ais_network":
        if "torchscript" in formats:
            weights.append(f"* `torchscript`: `{TORCHSCRIPT_NAME}`, the same block network traced; no watershed.")
        if "onnx" in formats:
            weights.append(f"* `onnx`: `{ONNX_NAME}`, the same block network, opset 17 (onnxruntime >= 1.14).")
    elif kind == "interactive" and "onnx" in formats:
        from .network_export import DECODER_ONNX_NAME, ENCODER_ONNX_NAME

        s = cfg.img_size
        weights += [
            "* ONNX (opset 17, onnxruntime >= 1.14), attached beside the weights and described in rdf.yaml under "
            "`config.samzoo.onnx` (the package's declared tensors take a raw image of any size and optional "
            "prompts, which needs Python control flow, so these two are not its `onnx` weights):",
            f"  * `{ENCODER_ONNX_NAME}`: `image` (1, 3, h, w) -> `image_embeddings`. Give it the image normalised "
            f"to 0..255 like the model does (`normalize_to_255` in `{ARCH_FILE}`) and resized (bilinear, "
            f"antialiased) so that its long side is {s} px; h and w are dynamic.",
            f"  * `{DECODER_ONNX_NAME}`: segment-anything's ONNX decoder conventions: `image_embeddings`, "
            "`point_coords` (objects, points, 2) in original pixels, `point_labels` (1 fg, 0 bg, 2/3 box corners, "
            "-1 padding; add a (0, 0) padding point when there is no box), `mask_input` + `has_mask_input`, "
            "`orig_im_size` (H, W) -> `masks` (objects, 1, H, W) logits (> 0 = object), `iou_predictions`, "
            "`low_res_masks`. Objects, points and the image size are dynamic.",
            "  They equal the PyTorch model to float rounding (samzoo's tests: identical masks, embeddings and "
            "IoU scores within 1e-3 absolute)."]
    elif len(formats) > 1:
        weights.append("* no TorchScript / ONNX here: " + (
            "the watershed is not expressible in them; the `ais_network` package carries the network." if kind == "ais"
            else "the optional prompt inputs need Python control flow; the `ais_network` package carries the "
            "encoder and AIS decoder."))
    lines += weights + ["", "## Use", "",
                        "```python",
                        "import bioimageio.core   # no samzoo needed",
                        "out = bioimageio.core.predict(model='this_package.zip', inputs={'image': array}"
                        + (", blocksize_parameter=1)" if kind == "ais_network" else ")"),
                        "# with samzoo installed: samzoo.load_model('this_package.zip') gives the SamzooModel",
                        "```", "",
                        f"Test tensors were computed from {sample_what}.", ""]
    lines += ["# Validation", "", "Measured metrics of this model (from the checkpoint's metadata):", "",
              md.metrics_table(model.metadata, card), "",
              "Reproduction tolerances used by `bioimageio test` (config.bioimageio.reproducibility_tolerance):", ""]
    for tol in tolerances:
        lines.append(f"* {', '.join(tol['output_ids'])}: relative {tol['relative_tolerance']}, absolute "
                     f"{tol['absolute_tolerance']}, mismatched elements per million {tol['mismatched_elements_per_million']}")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# descriptions
# --------------------------------------------------------------------------------------------

def _rdf_name(name: str, suffix: str) -> str:
    import string

    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    clean = "".join(c if c in allowed else "-" for c in f"{name} ({suffix})")
    return clean[:128] if len(clean) >= 5 else (clean + "-model")[:128]


def _tolerances(spec, entries):
    return [spec.ReproducibilityTolerance(**e) for e in entries]


def _fit_abs(tol: Mapping[str, Any], array: np.ndarray) -> dict[str, Any]:
    """bioimageio.spec rejects an absolute tolerance above 1% of the test tensor's maximum; cap it
    there (0 when the maximum is <= 0, leaving the relative tolerance)."""
    tol = dict(tol)
    tol["absolute_tolerance"] = float(max(0.0, min(tol["absolute_tolerance"], 0.01 * float(np.max(array)))))
    return tol


def _image_input(spec, test_path: Path, channels: int, *, batch: int | None, preprocessing=()):
    names = ["gray"] if channels == 1 else ["red", "green", "blue"]
    return spec.InputTensorDescr(
        id=spec.TensorId("image"),
        description="raw image intensities",
        axes=[spec.BatchAxis(size=batch),
              spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in names]),
              spec.SpaceInputAxis(id=spec.AxisId("y"), size=spec.ParameterizedSize(min=8, step=1)),
              spec.SpaceInputAxis(id=spec.AxisId("x"), size=spec.ParameterizedSize(min=8, step=1))],
        test_tensor=spec.FileDescr(source=test_path),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=list(preprocessing),
    )


def _space_out(spec, axis: str, tensor: str = "image"):
    return spec.SpaceOutputAxis(id=spec.AxisId(axis), size=spec.SizeReference(
        tensor_id=spec.TensorId(tensor), axis_id=spec.AxisId(axis)))


class _Build:
    """Shared state of one packaging run."""

    def __init__(self, model: SamzooModel, card: dict, formats: tuple[str, ...], work: Path,
                 ais_params: dict, sample_what: str):
        self.model, self.card, self.formats, self.work = model, card, formats, work
        self.ais_params, self.sample_what = ais_params, sample_what
        self.weights_path: Path | None = None
        self.attachments: list[Path] = []  # the model card and its cover (samzoo.packaging.card_files)

    def common(self, kind: str, spec, cover: Path, tolerances: list[dict], suffix: str, inputs, outputs, weights,
               extra_tags: Sequence[str], extra_files: Mapping[str, Any] | None = None) -> Any:
        """``extra_files``: ``{name: {"source": path, ...}}`` network files beside the weights (the
        interactive model's ONNX encoder / decoder), attached and described in ``config.samzoo``."""
        doc_dir = self.work / kind
        doc_dir.mkdir(exist_ok=True)
        doc = doc_dir / "README.md"
        doc.write_text(_documentation(kind, self.card, self.model, self.ais_params, self.formats,
                                      self.sample_what, tolerances), encoding="utf-8")
        samzoo_cfg = {
            "family": "microsam",
            "package_kind": kind,
            "model_config": self.model.config.to_dict(),
            "ais_params": dict(self.ais_params),
            "metadata": json.loads(json.dumps(self.model.metadata, default=str)),
            "card": json.loads(json.dumps(self.card, default=str)),
            "samzoo_version": _samzoo_version(),
        }
        if self.model.metadata.get("redistributable") is False:  # e.g. CellSAM's SAM part: publishing refuses
            samzoo_cfg.update(redistributable=False, licence=self.model.metadata.get("licence"))
        extra = {name: dict(entry) for name, entry in (extra_files or {}).items()}
        if extra:
            samzoo_cfg["onnx"] = {name: {**entry, "source": Path(entry["source"]).name} for name, entry in extra.items()}
        tags = list(dict.fromkeys([*map(str, self.card["tags"]), *extra_tags]))
        return spec.ModelDescr(
            name=_rdf_name(str(self.card["name"]), suffix),
            description=str(self.card["description"])[:1024],
            authors=md.bioimageio_authors(self.card),
            cite=md.bioimageio_cite(self.card),
            license=spec.LicenseId(str(self.card["license"])),
            tags=tags,
            version=str(self.card["version"]),
            documentation=spec.FileDescr(source=doc),
            covers=[spec.FileDescr(source=cover)],
            inputs=inputs,
            outputs=outputs,
            weights=weights,
            attachments=[spec.FileDescr(source=p) for p in
                         [*self.attachments, *(Path(e["source"]) for e in extra.values())]],
            parent=md.linked_parent(spec, self.model.metadata),
            config=spec.Config(
                bioimageio=spec.BioimageioConfig(reproducibility_tolerance=_tolerances(spec, tolerances)),
                samzoo=samzoo_cfg,
            ),
        )

    def state_dict_weights(self, spec, callable_name: str, kwargs: dict):
        return spec.PytorchStateDictWeightsDescr(
            source=self.weights_path,
            architecture=spec.ArchitectureFromFileDescr(source=self.architecture_file(), callable=callable_name,
                                                        kwargs=kwargs),
            pytorch_version=spec.Version(torch.__version__.split("+")[0]),
            dependencies=spec.FileDescr(source=self.environment()),
        )

    def architecture_file(self) -> Path:
        """The self-contained architecture source, copied once into the work folder."""
        path = self.work / ARCH_FILE
        if not path.exists():
            shutil.copyfile(ARCH_SOURCE, path)
        return path

    def environment(self) -> Path:
        path = self.work / "environment.yaml"
        if not path.exists():
            path.write_text(ENVIRONMENT, encoding="utf-8")
        return path


def _samzoo_version() -> str:
    from .... import __version__

    return str(__version__)


def _save(arr: np.ndarray, path: Path) -> Path:
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
    return path


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def package_model(model: SamzooModel | str | os.PathLike | None, outdir: str | os.PathLike, card=None,
                  formats: Sequence[str] = FORMATS, sample_image=None,
                  *, kinds: Sequence[str] | None = None) -> dict[str, Path]:
    """Write BioImage.IO packages of ``model`` into ``outdir``; returns ``{kind: zip path}``.

    ``model``: a :class:`SamzooModel`, or anything :func:`samzoo.api.load_model` accepts (ID or
    path; ``None`` = the shipped default model). ``card``: a model card YAML path or mapping
    (``None``: built from the checkpoint's metadata with the required μSAM/SAM citations).
    ``sample_image``: path, array or ``(image, labels)`` for the test tensors and covers (default:
    the shipped sample image, or a synthetic one). ``kinds`` restricts the packages written
    (default: every kind the model and formats support).
    """
    formats = _check_formats(formats)
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise InputError(f"unknown package kind(s) {bad}; known: {', '.join(KINDS)}")
    outdir = _check_outdir(outdir)
    card_source = card  # a given card travels inside every package (samzoo_card.yaml)
    if card is not None:  # a bad card fails before the model is even loaded
        card = _resolve_card(card, None, "model")
    if sample_image is not None:  # a bad sample image fails before the model is loaded
        image_chw, given_labels, sample_what = _prepare_sample(sample_image)

    if not isinstance(model, SamzooModel):
        from ....api import load_model

        model = load_model(model)
    model = model.eval()
    _release_memory()  # the checkpoint's state dict is gone; return its pages before the big passes
    if sample_image is None:
        image_chw, given_labels, sample_what = _prepare_sample(None, model.config.img_size)
    if card is None:
        card = _resolve_card(None, model.metadata, model.metadata.get("name") or model.config.name)
    elif md.card_model_problems(card, model.metadata):
        raise InputError(f"model card {card.get('name')!r} does not describe this checkpoint: "
                         + "; ".join(md.card_model_problems(card, model.metadata)))

    wanted = list(kinds) if kinds is not None else list(KINDS)
    if not model.has_ais_decoder:
        if kinds is not None and any(k in ("ais", "ais_network") for k in kinds):
            raise InputError("the model has no AIS decoder, so no ais / ais_network package can be made")
        wanted = [k for k in wanted if k == "interactive"]
    if not wanted:
        raise InputError("nothing to package")

    from ..ais import AisParams

    try:
        ais_params = AisParams.from_dict(dict(model.ais_params)).to_dict()
    except InputError as err:
        raise InputError(f"the model's stored AIS parameters are invalid: {err}") from None

    stem = md.slug(str(card.get("id") or card["name"]))
    finals = {kind: outdir / f"{stem}.{kind}.zip" for kind in wanted}
    from bioimageio.spec import ValidationContext

    with tempfile.TemporaryDirectory(prefix="samzoo-package-") as tmp:
        work = Path(tmp)
        # one validation context: each file (the weights above all) is hashed once for all packages
        with ValidationContext(perform_io_checks=True, log_warnings=False):
            attachments = stage_card_files(card_source, work / "card") if card_source is not None else []
            built = _build_all(model, card, formats, work, ais_params, sample_what, image_chw, given_labels,
                               wanted, attachments)
        return _write_zips(built, finals, outdir)


def _release_memory() -> None:
    """Hand memory freed by the big transient tensors back to the OS (glibc keeps it otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _phase(name: str, start: float) -> None:
    """Debug log of time and peak RSS per phase (``logging.getLogger('samzoo.families.microsam.packaging.export')``)."""
    if log.isEnabledFor(logging.DEBUG):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kB -> GB
        log.debug("%s: %.1f s, peak RSS so far %.2f GB", name, time.perf_counter() - start, peak)


def _build_all(model, card, formats, work, ais_params, sample_what, image_chw, given_labels, wanted,
               attachments=()):
    import bioimageio.spec.model.v0_5 as spec

    from ..ais import AisParams, watershed_from_prediction

    b = _Build(model, card, formats, work, ais_params, sample_what)
    b.attachments = list(attachments)
    cfg = model.config
    channels = image_chw.shape[0]
    test_image = image_chw.astype(np.float32)[None]
    original = tuple(image_chw.shape[1:])

    start = time.perf_counter()
    _phase("start", start)
    # ---- the one encoder pass (the trace when TorchScript is made) ----
    with torch.no_grad():
        x = normalized_input(model, np.moveaxis(test_image[0], 0, -1))
        sam_input, input_shape = model.preprocess(x.to(model.device))
        embedding = model.sam.image_encoder(sam_input)
        del sam_input
        _release_memory()
        _phase("encoder", start)
        maps = None
        if model.has_ais_decoder:
            maps = decode_embedding(model.ais_decoder, embedding, input_shape, original)
            _release_memory()
            _phase("AIS decoder", start)

        labels = None
        if maps is not None:
            from ..predictor import resolve_tiling

            if resolve_tiling(original, cfg.img_size)[0] is None:
                labels = watershed_from_prediction(maps[0].cpu().numpy(), AisParams.from_dict(ais_params))
            else:  # samzoo.segment tiles an image this large: its labels need the tiled run
                from ....segmentation.api import segment

                labels = segment(np.moveaxis(test_image[0], 0, -1), model, mode="ais",
                                 ais_params=AisParams.from_dict(ais_params), progress=False, is_volume=False)
    if labels is not None and labels.max() == 0 and "ais" in wanted:
        raise SamzooError(
            "the model finds no object in the sample image with its AIS parameters, so the AIS package "
            "would have an empty (untestable) test output; pass a sample image with objects (sample_image=...) "
            "or check the model's ais_params"
        )

    # ---- the weights file, written once for all packages ----
    b.weights_path = work / WEIGHTS_NAME
    torch.save(packaged_state(model), b.weights_path)
    _phase("weights written", start)

    image_path = _save(test_image, work / "image.npy")
    descrs: dict[str, Any] = {}
    config_kwargs = cfg.to_dict()

    if "ais" in wanted:
        labels_path = _save(labels[None, None].astype(np.uint32), work / "instance_labels.npy")
        cover = _write_cover(work / "cover_ais.png", image_chw, labels)
        tol = [dict(output_ids=["instance_labels"], **LABEL_TOLERANCE)]
        descrs["ais"] = b.common(
            "ais", spec, cover, tol, "AIS",
            inputs=[_image_input(spec, image_path, channels, batch=1)],
            outputs=[spec.OutputTensorDescr(
                id=spec.TensorId("instance_labels"),
                description="instance labels: 0 background, objects 1..N",
                axes=[spec.BatchAxis(size=1), spec.ChannelAxis(channel_names=[spec.Identifier("instance_label")]),
                      _space_out(spec, "y"), _space_out(spec, "x")],
                test_tensor=spec.FileDescr(source=labels_path),
                data=spec.IntervalOrRatioDataDescr(type="uint32"),
            )],
            weights=spec.WeightsDescr(pytorch_state_dict=b.state_dict_weights(
                spec, "AisInstanceSegmentation", {"config": config_kwargs, "ais_params": dict(ais_params)})),
            extra_tags=["instance-segmentation", "segment-anything", "micro-sam"],
        )

    if "ais_network" in wanted:
        descrs["ais_network"] = _ais_network_descr(b, spec, image_chw, ais_params)
        _phase("ais_network (block network, TorchScript / ONNX)", start)

    if "interactive" in wanted:
        ref = labels if labels is not None and labels.max() > 0 else given_labels
        if ref is None or np.asarray(ref).max() == 0:
            ref = _fallback_labels(image_chw)
        objects = _objects_for_prompts(np.asarray(ref))
        if not objects:
            raise SamzooError("could not derive any object from the sample image for the prompt test tensors")
        prompts = make_prompts(objects, input_shape, cfg.img_size, 4 * cfg.embedding_size)
        masks, scores = prompt_masks(model, embedding, input_shape, original,
                                     *(torch.from_numpy(prompts[k]) for k in
                                       ("box_prompts", "point_prompts", "point_labels", "mask_prompts")))
        paths = {k: _save(v, work / f"{k}.npy") for k, v in prompts.items()}
        masks_path = _save(masks.numpy(), work / "masks.npy")
        scores_path = _save(scores.numpy(), work / "scores.npy")
        emb_path = _save(embedding.cpu().numpy().astype(np.float32), work / "embeddings.npy")
        mask_labels = np.zeros(original, np.uint32)
        for i, m in enumerate(masks.numpy()[0, :, 0]):
            mask_labels[(m > 0) & (mask_labels == 0)] = i + 1
        cover = _write_cover(work / "cover_interactive.png", image_chw, mask_labels,
                             points=prompts["point_prompts"][0, :, 0], boxes=prompts["box_prompts"][0])
        g, e = cfg.embedding_size, cfg.prompt_embed_dim
        arbitrary = spec.ParameterizedSize(min=1, step=1)
        obj = lambda: spec.IndexInputAxis(id=spec.AxisId("object"), size=arbitrary)  # noqa: E731
        emb_channels = [spec.Identifier(f"c{i}") for i in range(e)]
        inputs = [
            _image_input(spec, image_path, channels, batch=1),
            spec.InputTensorDescr(
                id=spec.TensorId("box_prompts"), optional=True, description="x_min, y_min, x_max, y_max (pixels)",
                axes=[spec.BatchAxis(size=1), obj(),
                      spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in ("x_min", "y_min", "x_max", "y_max")])],
                test_tensor=spec.FileDescr(source=paths["box_prompts"]),
                data=spec.IntervalOrRatioDataDescr(type="float32")),
            spec.InputTensorDescr(
                id=spec.TensorId("point_prompts"), optional=True, description="x, y (pixels)",
                axes=[spec.BatchAxis(size=1), obj(), spec.IndexInputAxis(id=spec.AxisId("point"), size=arbitrary),
                      spec.ChannelAxis(channel_names=[spec.Identifier("x"), spec.Identifier("y")])],
                test_tensor=spec.FileDescr(source=paths["point_prompts"]),
                data=spec.IntervalOrRatioDataDescr(type="float32")),
            spec.InputTensorDescr(
                id=spec.TensorId("point_labels"), optional=True, description="1 foreground, 0 background, -1 padding",
                axes=[spec.BatchAxis(size=1), obj(), spec.IndexInputAxis(id=spec.AxisId("point"), size=arbitrary)],
                test_tensor=spec.FileDescr(source=paths["point_labels"]),
                data=spec.IntervalOrRatioDataDescr(type="int64")),
            spec.InputTensorDescr(
                id=spec.TensorId("mask_prompts"), optional=True, description="low-resolution mask logits",
                axes=[spec.BatchAxis(size=1), obj(), spec.ChannelAxis(channel_names=[spec.Identifier("mask")]),
                      spec.SpaceInputAxis(id=spec.AxisId("y"), size=4 * g),
                      spec.SpaceInputAxis(id=spec.AxisId("x"), size=4 * g)],
                test_tensor=spec.FileDescr(source=paths["mask_prompts"]),
                data=spec.IntervalOrRatioDataDescr(type="float32")),
            spec.InputTensorDescr(
                id=spec.TensorId("embeddings"), optional=True, description="precomputed image embeddings",
                axes=[spec.BatchAxis(size=1), spec.ChannelAxis(channel_names=emb_channels),
                      spec.SpaceInputAxis(id=spec.AxisId("y"), size=g),
                      spec.SpaceInputAxis(id=spec.AxisId("x"), size=g)],
                # bioimageio.core needs a test tensor for every input; the AIS package (and our tests)
                # cover the encoder path, this one checks that given embeddings are used as they are.
                test_tensor=spec.FileDescr(source=emb_path),
                data=spec.IntervalOrRatioDataDescr(type="float32")),
        ]
        outputs = [
            spec.OutputTensorDescr(
                id=spec.TensorId("masks"), description="binary masks, one per object",
                axes=[spec.BatchAxis(size=1), spec.IndexOutputAxis(id=spec.AxisId("object"), size=spec.DataDependentSize()),
                      spec.ChannelAxis(channel_names=[spec.Identifier("mask")]),
                      _space_out(spec, "y"), _space_out(spec, "x")],
                test_tensor=spec.FileDescr(source=masks_path),
                data=spec.IntervalOrRatioDataDescr(type="uint8")),
            spec.OutputTensorDescr(
                id=spec.TensorId("scores"), description="predicted IoU per mask",
                axes=[spec.BatchAxis(size=1), spec.IndexOutputAxis(id=spec.AxisId("object"), size=spec.DataDependentSize()),
                      spec.ChannelAxis(channel_names=[spec.Identifier("iou")])],
                test_tensor=spec.FileDescr(source=scores_path),
                data=spec.IntervalOrRatioDataDescr(type="float32")),
            spec.OutputTensorDescr(
                id=spec.TensorId("image_embeddings"),
                description="image embeddings; pass them back as the embeddings input",
                axes=[spec.BatchAxis(size=1), spec.ChannelAxis(channel_names=emb_channels),
                      spec.SpaceOutputAxis(id=spec.AxisId("y"), size=g),
                      spec.SpaceOutputAxis(id=spec.AxisId("x"), size=g)],
                test_tensor=spec.FileDescr(source=emb_path),
                data=spec.IntervalOrRatioDataDescr(type="float32")),
        ]
        tol = [dict(output_ids=["masks"], **LABEL_TOLERANCE),
               _fit_abs(dict(output_ids=["scores"], **SCORE_TOLERANCE), scores.numpy()),
               _fit_abs(dict(output_ids=["image_embeddings"], **EMBEDDING_TOLERANCE), embedding.cpu().numpy())]
        onnx_files = None
        if "onnx" in b.formats:
            from . import network_export

            onnx_files = network_export.interactive_onnx_files(model, work)
            _phase("interactive ONNX (encoder, prompt decoder)", start)
        descrs["interactive"] = b.common(
            "interactive", spec, cover, tol, "interactive",
            inputs=inputs, outputs=outputs,
            weights=spec.WeightsDescr(pytorch_state_dict=b.state_dict_weights(
                spec, "InteractiveSegmentation",
                {"config": config_kwargs, "with_ais_decoder": model.has_ais_decoder})),
            extra_tags=["interactive-segmentation", "segment-anything", "micro-sam",
                        *(["onnx"] if "onnx" in b.formats else [])],
            extra_files=onnx_files,
        )
    _phase("descriptions built", start)
    return descrs


def _block_of(image_chw: np.ndarray, size: int) -> np.ndarray:
    """An S x S block of the sample for the block network's test tensor: the centre crop, the
    image reflected at its borders where it is smaller than S."""
    c, h, w = image_chw.shape
    if h < size or w < size:
        pad_h, pad_w = max(0, size - h), max(0, size - w)
        image_chw = np.pad(image_chw, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)),
                           mode="reflect" if min(h, w) > max(pad_h, pad_w) // 2 + 1 else "edge")
        h, w = image_chw.shape[1:]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image_chw[:, top:top + size, left:left + size]).astype(np.float32)


def scale_range_like_bioimageio(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """The ais_network package's pre-processing as its rdf.yaml declares it (scale_range over all
    axes with ``eps``, clip to 0..1, times 255), in numpy: what a consumer feeds the network."""
    lo, hi = np.percentile(image, (low, high))
    scaled = (image - lo) / (hi - lo + SCALE_RANGE_EPS)
    return (np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.float32)


def _ais_network_descr(b: "_Build", spec, image_chw: np.ndarray, ais_params: Mapping[str, Any]):
    """The ``ais_network`` package: one S x S block (raw) -> decoder maps, with the halo a
    blockwise consumer crops; weights from the architecture file, traced / exported from it."""
    from . import network_export

    cfg = b.model.config
    size, halo = cfg.img_size, cfg.img_size // 8
    block = _block_of(image_chw, size)
    low, high = (1.0, 99.8) if cfg.normalization == "percentile" else (0.0, 100.0)
    x = torch.from_numpy(scale_range_like_bioimageio(block, low, high))[None]
    network = network_export.architecture_model(b.model, arch.AisNetwork)
    with torch.no_grad():
        maps = network(x)
    weights = {"pytorch_state_dict": b.state_dict_weights(spec, "AisNetwork", {"config": cfg.to_dict()})}
    torch_version = spec.Version(torch.__version__.split("+")[0])
    if "torchscript" in b.formats:
        path = b.work / TORCHSCRIPT_NAME
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.save: still what consumers load
            torch.jit.save(network_export.trace_block(network, x), str(path))
        weights["torchscript"] = spec.TorchscriptWeightsDescr(source=path, pytorch_version=torch_version,
                                                              parent="pytorch_state_dict")
    if "onnx" in b.formats:
        path = network_export.export_block_onnx(network, x, b.work / ONNX_NAME)
        weights["onnx"] = spec.OnnxWeightsDescr(source=path, opset_version=network_export.ONNX_OPSET,
                                                parent="pytorch_state_dict")
    maps_np = maps.numpy().astype(np.float32)
    labels = arch.watershed_from_maps(maps_np[0], ais_params)
    image_path = _save(block[None], b.work / "ais_network_image.npy")
    maps_path = _save(maps_np, b.work / "decoder_maps.npy")
    cover = _write_cover(b.work / "cover_ais_network.png", block, labels)
    pre = [
        spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
            axes=[spec.AxisId("channel"), spec.AxisId("y"), spec.AxisId("x")],
            min_percentile=low, max_percentile=high, eps=SCALE_RANGE_EPS)),
        spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)),
        spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=255.0, offset=0.0)),
    ]
    channels = block.shape[0]
    names = ["gray"] if channels == 1 else ["red", "green", "blue"]
    tol = [_fit_abs(dict(output_ids=["decoder_maps"], **MAP_TOLERANCE), maps_np)]
    return b.common(
        "ais_network", spec, cover, tol, "AIS network",
        inputs=[spec.InputTensorDescr(
            id=spec.TensorId("image"), description=f"raw image intensities, one {size} x {size} block",
            axes=[spec.BatchAxis(size=1), spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in names]),
                  spec.SpaceInputAxis(id=spec.AxisId("y"), size=size),
                  spec.SpaceInputAxis(id=spec.AxisId("x"), size=size)],
            test_tensor=spec.FileDescr(source=image_path),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=pre)],
        outputs=[spec.OutputTensorDescr(
            id=spec.TensorId("decoder_maps"),
            description="AIS decoder outputs: foreground, center distance, boundary distance",
            axes=[spec.BatchAxis(size=1), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in AIS_CHANNELS]),
                  *(spec.SpaceOutputAxisWithHalo(id=spec.AxisId(a), halo=halo, size=spec.SizeReference(
                      tensor_id=spec.TensorId("image"), axis_id=spec.AxisId(a))) for a in ("y", "x"))],
            test_tensor=spec.FileDescr(source=maps_path),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
        )],
        weights=spec.WeightsDescr(**weights),
        extra_tags=["instance-segmentation", "segment-anything", "micro-sam", *[f for f in b.formats if f != "pytorch_state_dict"]],
    )


def _write_zips(descrs: Mapping[str, Any], finals: Mapping[str, Path], outdir: Path) -> dict[str, Path]:
    """Write every zip to a temp file in ``outdir`` (``samzoo.io.atomic_path``); they are moved
    into place only when all were written, and on any error every temp file is removed."""
    import contextlib
    from zipfile import ZIP_STORED

    from bioimageio.spec import ValidationContext

    from ....io import atomic_path
    from ....packaging.portable_rdf import save_portable_package

    with contextlib.ExitStack() as pending:
        for kind, descr in descrs.items():
            tmp = pending.enter_context(atomic_path(outdir / finals[kind].name))
            # the files were hashed and the description fully validated while it was built; the
            # reload of the written zip then checks the structure without hashing every file again
            with ValidationContext(perform_io_checks=False, log_warnings=False):
                # format 0.5.10: bioimage.io's runtime (spec 0.5.10) and spec 0.5.12 accept it
                save_portable_package(descr, tmp, compression=ZIP_STORED)
    return {kind: finals[kind] for kind in descrs}
