"""Score a model on annotated images: per-image and per-dataset mSA and SA(0.5).

``evaluate(model, images, labels, mode=...)`` takes arrays or paths; ``resolve_pairs`` turns
the CLI's IMAGES / LABELS arguments (folders, globs or single files) into matched file pairs.

Modes: ``ais`` and ``amg`` segment each image automatically (``samzoo.segmentation.api.segment``)
and score the whole label image; ``interactive`` runs the μSAM protocol
(``evaluation.interactive``) and scores the prompted objects after the initial prompt and after
the last correction (all iterations go to the CSV).
"""

from __future__ import annotations

import csv
import glob
import io
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, read_image
from ..families import family_of
from .interactive import DEFAULT_ITERATIONS, interactive_evaluation
from .metrics import _as_labels, dice, mean_segmentation_accuracy

__all__ = ["EVAL_MODES", "EvaluationResult", "evaluate", "format_table", "resolve_pairs", "score", "write_csv"]

EVAL_MODES = ("auto", "ais", "amg", "interactive")
_GLOB_CHARS = set("*?[")


# --------------------------------------------------------------------------------------------
# files


def _list_files(spec: str | os.PathLike, what: str) -> list[Path]:
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith("."))
        if not files:
            raise InputError(f"no {what} files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return files
    if _GLOB_CHARS & set(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not files:
            raise InputError(f"the {what} pattern {text!r} matches no file")
        return files
    if path.is_file():
        return [path]
    raise InputError(f"{what} not found: {path} (expected a file, a folder or a glob pattern)")


def _names(files: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(str(f) for f in files[:limit])
    return shown + (f" (+{len(files) - limit} more)" if len(files) > limit else "")


def resolve_pairs(images: str | os.PathLike, labels: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Matched (image file, label file) pairs from two folders, globs or single files.

    Files pair up by sorted order; when the counts differ, the error names the files that have
    no partner with the same name stem (or the surplus files when the stems differ anyway).
    """
    image_files = _list_files(images, "image")
    label_files = _list_files(labels, "label")
    if len(image_files) != len(label_files):
        image_stems = {p.stem: p for p in image_files}
        label_stems = {p.stem: p for p in label_files}
        lonely_images = [p for s, p in image_stems.items() if s not in label_stems]
        lonely_labels = [p for s, p in label_stems.items() if s not in image_stems]
        if not lonely_images and not lonely_labels:  # stems match but counts don't: list the tail
            n = min(len(image_files), len(label_files))
            lonely_images, lonely_labels = image_files[n:], label_files[n:]
        detail = []
        if lonely_images:
            detail.append(f"images without a label file: {_names(lonely_images)}")
        if lonely_labels:
            detail.append(f"label files without an image: {_names(lonely_labels)}")
        raise InputError(f"{len(image_files)} images but {len(label_files)} label files; " + "; ".join(detail))
    return list(zip(image_files, label_files))


def _read_pair(image_file: Path, label_file: Path) -> tuple[np.ndarray, np.ndarray]:
    image = read_image(image_file)
    labels = read_image(label_file)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    try:
        labels = _as_labels(labels, "label image")
    except InputError as err:
        raise InputError(f"{label_file}: {err}") from None
    if labels.ndim != 2:
        raise InputError(f"{label_file}: label image must be 2D, got shape {labels.shape}")
    if not _fits(image.shape, labels.shape):
        raise InputError(f"shape mismatch: image {image_file} is {tuple(image.shape)} but label image "
                         f"{label_file} is {tuple(labels.shape)}")
    return image, labels


def _fits(image_shape: tuple[int, ...], label_shape: tuple[int, ...]) -> bool:
    if len(image_shape) == 2:
        return tuple(image_shape) == tuple(label_shape)
    if len(image_shape) == 3:  # (H, W, C) or (C, H, W)
        return tuple(image_shape[:2]) == tuple(label_shape) or tuple(image_shape[1:]) == tuple(label_shape)
    return False


# --------------------------------------------------------------------------------------------
# scoring


def score(gt: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """mSA, SA(0.5), foreground Dice and object counts of one prediction."""
    gt = _as_labels(gt, "ground truth")
    pred = _as_labels(pred, "prediction")
    msa, accuracies = mean_segmentation_accuracy(gt, pred)
    return {
        "msa": float(msa),
        "sa50": float(accuracies[0]),
        "dice": float(dice(gt, pred)),
        "n_gt": int(len(np.unique(gt[gt > 0]))),
        "n_pred": int(len(np.unique(pred[pred > 0]))),
    }


@dataclass
class EvaluationResult:
    """``rows``: one dict per image (``image`` name first, then the scores, ``seconds``);
    ``mean``: the same columns averaged over the images (``image`` = ``"mean"``);
    ``iterations``: for ``interactive``, one row per (image, iteration)."""

    mode: str
    rows: list[dict[str, Any]]
    mean: dict[str, Any]
    iterations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def table(self) -> list[dict[str, Any]]:
        return [*self.rows, self.mean]

    def format(self) -> str:
        return format_table(self.table)


def _mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    mean: dict[str, Any] = {"image": "mean"}
    for key in rows[0]:
        if key == "image":
            continue
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            mean[key] = float(np.mean(values))
    return mean


def evaluate(
    model: "Any | str | os.PathLike | None",
    images: Sequence[np.ndarray | str | os.PathLike],
    labels: Sequence[np.ndarray | str | os.PathLike],
    *,
    mode: str = "auto",
    params: dict[str, Any] | None = None,
    start: str = "box",
    n_iterations: int = DEFAULT_ITERATIONS,
    names: Sequence[str] | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate ``model`` on image / label pairs (arrays or file paths).

    ``mode``: ``auto`` is the family's default automatic segmentation (μSAM: AIS); ``ais`` / ``amg``
    choose μSAM's modes (families list theirs in ``FamilySpec.modes``); ``interactive`` runs the
    prompt protocol for families with prompts.
    ``params``: post-processing parameter overrides (μSAM: AIS or AMG; SAMCell: thresholds); for ``interactive``
    the keys of :func:`interactive_evaluation` (e.g. ``batch_size``, ``min_object_size``,
    ``use_mask_prompt``). ``start`` and ``n_iterations`` configure the interactive protocol.
    """
    from ..segmentation.api import resolve_model, segment

    if mode not in EVAL_MODES:
        raise InputError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label images")
    if not images:
        raise InputError("nothing to evaluate: no images given")
    if names is None:
        names = [Path(str(im)).name if isinstance(im, (str, os.PathLike)) else f"image_{i}"
                 for i, im in enumerate(images)]
    model = resolve_model(model)
    params = dict(params or {})
    family = family_of(model)
    if mode == "interactive" and family.prompt_predictor is None:
        what = "take no prompts" if family.segment_from_prompts is None else "have no iterative prompting"
        raise InputError(f"{family.title} models {what}: interactive evaluation does not apply")
    if mode not in ("auto", "interactive") and mode not in family.modes:
        raise InputError(f"{family.title} models have no mode {mode!r}"
                         + (f" (modes: {', '.join(family.modes)})" if family.modes else " (use mode 'auto')"))
    if mode == "auto" and family.modes:
        mode = family.modes[0]
    options = {"mode": mode} if family.modes else {}

    rows, iterations = [], []
    for name, image, label in tqdm(list(zip(names, images, labels)), desc="evaluate", disable=not progress):
        if isinstance(image, (str, os.PathLike)) or isinstance(label, (str, os.PathLike)):
            if not isinstance(image, (str, os.PathLike)) or not isinstance(label, (str, os.PathLike)):
                raise InputError("pass images and labels both as arrays or both as file paths")
            image, label = _read_pair(Path(image), Path(label))
        else:
            label = _as_labels(label, f"label image of {name}")
            if not _fits(np.shape(image), label.shape):
                raise InputError(f"shape mismatch: image {name} is {np.shape(image)} but its label image is "
                                 f"{label.shape}")
        started = time.perf_counter()
        if mode == "interactive":
            result = interactive_evaluation(image, label, model, start=start, n_iterations=n_iterations,
                                            progress=False, **params)
            first, last = result.iterations[0], result.final
            row = {"image": name, "n_objects": len(result.object_ids),
                   "iou_0": first.mean_iou, f"iou_{last.iteration}": last.mean_iou,
                   "msa_0": first.msa, f"msa_{last.iteration}": last.msa,
                   "sa50_0": first.sa50, f"sa50_{last.iteration}": last.sa50,
                   "dice_0": first.mean_dice, f"dice_{last.iteration}": last.mean_dice}
            for it in result.iterations:
                iterations.append({"image": name, "start": start, **it.to_dict()})
        else:
            pred = segment(image, model, progress=False, params=params or None, **options)
            if pred.shape != label.shape:
                raise InputError(f"{name}: prediction shape {pred.shape} differs from the label image's "
                                 f"{label.shape} (a 3D image? evaluation takes 2D images)")
            row = {"image": name, **score(label, pred)}
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    return EvaluationResult(mode=mode, rows=rows, mean=_mean_row(rows), iterations=iterations)


# --------------------------------------------------------------------------------------------
# output


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned plain-text table (columns of the first row; numbers right-aligned)."""
    if not rows:
        return ""
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [k for k in row if k not in columns]
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or c not in r for r in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows (dicts) as CSV, atomically; the header is the union of keys in order."""
    from ..io import atomic_path

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise InputError(f"CSV output must end in .csv, got {path}")
    with atomic_path(path) as temp:
        temp.write_text(buffer.getvalue(), encoding="utf-8")
    return path
