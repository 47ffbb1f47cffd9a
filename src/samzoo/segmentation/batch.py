"""Segment many images in one command: folders, globs and file lists, resumable.

Why a module of its own: a plate of thousands of images needs things a single image does not --
expanding the inputs, one output name per input, skipping what an earlier (maybe crashed) run
already finished, carrying on past a broken file and saying at the end what failed and why.

Completeness: outputs are written atomically (``io.write_labels`` through ``io.atomic_path``),
so an output file that exists is complete; a crash leaves at most a hidden temporary file, never
a truncated result. ``overwrite`` redoes existing outputs.

GPU: with the model on a GPU, untiled 2D images of the same shape go through the encoder
together (``batch_size`` per call, through the family's block model); on a CPU batching buys
nothing, and every image takes the ordinary ``segment`` path.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError, SamzooError
from ..io import IMAGE_SUFFIXES, read_image, write_labels

DEFAULT_NAME_PATTERN = "{stem}_labels.tif"
LIST_SUFFIXES = (".txt",)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Image files named by ``inputs``: files, folders (their image files, sorted, not
    recursive), glob patterns and ``.txt`` lists (one path per line, relative to the list's
    folder; blank lines and ``#`` comments skipped). Order kept, duplicates dropped."""
    files: list[Path] = []
    for text in inputs:
        path = Path(text)
        if _is_glob(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            images = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise InputError(f"pattern {text!r} matches no image files")
            files.extend(images)
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(images)
        elif path.suffix.lower() in LIST_SUFFIXES:
            if not path.is_file():
                raise InputError(f"file list not found: {path}")
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    item = Path(line)
                    files.append(item if item.is_absolute() else path.parent / item)
        else:
            files.append(path)  # a missing file is reported per file, in the summary
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise InputError("no input images")
    return unique


def output_name(pattern: str, path: Path, index: int) -> str:
    """The output file name for ``path``: ``pattern`` with ``{stem}``, ``{name}``, ``{suffix}``,
    ``{parent}`` and ``{index}``."""
    try:
        name = pattern.format(stem=path.stem, name=path.name, suffix=path.suffix, parent=path.parent.name,
                              index=index)
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(f"--name-pattern {pattern!r}: {err!s} (known fields: stem, name, suffix, parent, index)"
                         ) from None
    if "/" in name or os.sep in name or name in ("", ".", ".."):
        raise InputError(f"--name-pattern {pattern!r} gives {name!r}, which is not a plain file name")
    if not name.lower().endswith((".tif", ".tiff")):
        raise InputError(f"--name-pattern {pattern!r} must give .tif/.tiff names, got {name!r}")
    return name


@dataclass
class ImageResult:
    input: Path
    output: Path
    status: str  # done | skipped | failed
    objects: int | None = None
    seconds: float = 0.0
    reason: str = ""


def plan_outputs(files: Sequence[Path], output_dir: str | os.PathLike, pattern: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs; two inputs that would share an output name are an error."""
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o {folder}: with several inputs the output must be a folder")
    pairs, owners = [], {}
    for i, path in enumerate(files):
        target = folder / output_name(pattern, path, i)
        if target in owners:
            raise InputError(f"{owners[target]} and {path} would both be written to {target}; "
                             "use a --name-pattern with {parent} or {index}")
        owners[target] = path
        if target.resolve() == path.resolve():
            raise InputError(f"output {target} would overwrite its input")
        pairs.append((path, target))
    return pairs


def check_writable(folder: Path) -> None:
    """Fail before any work when the output folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".samzoo-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(f"cannot write to output folder {folder}: {err.strerror or err}") from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def segment_batch(
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    model: Any,
    *,
    name_pattern: str = DEFAULT_NAME_PATTERN,
    overwrite: bool = False,
    progress: bool = True,
    batch_size: int | None = None,
    precision: str = "float32",
    **segment_kwargs: Any,
) -> list[ImageResult]:
    """Segment every input image into ``output_dir`` (see the module docstring).

    ``model`` is a loaded ``SamzooModel``; ``segment_kwargs`` go to ``api.segment`` (mode,
    ais_params, tile_shape, ...). ``batch_size``: images per encoder call on a GPU (default 8
    there, 1 on a CPU). ``precision``: see ``api.segment`` (an int8 copy is made once for the whole
    batch). Never raises for a single image: its failure is in its result.
    """
    from .api import segment, with_precision

    pairs = plan_outputs(expand_inputs(inputs), output_dir, name_pattern)
    check_writable(Path(output_dir))
    model = with_precision(model, precision)
    segment_kwargs["precision"] = precision
    on_gpu = model.device.type != "cpu"
    batch_size = batch_size or (8 if on_gpu else 1)
    results: list[ImageResult] = []
    todo: list[tuple[Path, Path]] = []
    for source, target in pairs:
        if target.exists() and not overwrite:
            results.append(ImageResult(source, target, "skipped", reason="output exists"))
        else:
            todo.append((source, target))
    bar = tqdm(total=len(pairs), initial=len(results), desc="images", disable=not progress, unit="img")
    groups = _gpu_groups(todo, batch_size, model, segment_kwargs) if batch_size > 1 else [[p] for p in todo]
    for group in groups:
        if len(group) > 1:
            results.extend(_segment_group(group, model, segment_kwargs))
            bar.update(len(group))
            continue
        source, target = group[0]
        start = time.perf_counter()
        try:
            labels = segment(read_image(source), model, progress=False, **segment_kwargs)
            write_labels(target, labels)
            results.append(ImageResult(source, target, "done", int(labels.max()), time.perf_counter() - start))
        except (SamzooError, MemoryError, OSError, ValueError, RuntimeError) as err:
            results.append(ImageResult(source, target, "failed", seconds=time.perf_counter() - start,
                                       reason=_one_line(err)))
        bar.update()
    bar.close()
    order = {p: i for i, (p, _) in enumerate(pairs)}
    return sorted(results, key=lambda r: order[r.input])


def _gpu_groups(todo, batch_size, model, segment_kwargs) -> list[list[tuple[Path, Path]]]:
    """Consecutive runs of readable same-shape 2D images the family encodes whole, at most
    ``batch_size`` long; everything else alone (automatic mode of a family with a block model)."""
    from ..families import family_of

    family = family_of(model)
    if (family.block_model is None or segment_kwargs.get("mode", "ais") != "ais"
            or segment_kwargs.get("tile_shape") or segment_kwargs.get("is_volume")):
        return [[p] for p in todo]
    fits = family.block_model(model, segment_kwargs.get("ais_params") or segment_kwargs.get("params")).fits_whole
    groups: list[list[tuple[Path, Path]]] = []
    previous = None
    for pair in todo:
        shape = _shape_of(pair[0])
        if (groups and len(groups[-1]) < batch_size and shape is not None and shape == previous and fits(shape)):
            groups[-1].append(pair)
        else:
            groups.append([pair])
        previous = shape
    return groups


def _shape_of(path: Path) -> tuple[int, ...] | None:
    try:
        return tuple(read_image(path).shape)
    except SamzooError:
        return None


def _segment_group(group, model, segment_kwargs) -> list[ImageResult]:
    """One encoder call for several whole images (GPU), then each image's labels from its maps."""
    from ..families import family_of

    start = time.perf_counter()
    images = [read_image(source) for source, _ in group]
    family = family_of(model)
    block_model = family.block_model(model, segment_kwargs.get("ais_params") or segment_kwargs.get("params"),
                                     batch_size=len(group), precision=segment_kwargs.get("precision", "float32"))
    stats = [block_model.intensity_stats(lambda r, c, im=im: im[r, c], im.shape, im.dtype) for im in images]
    maps = block_model.predict_maps(images, stats)
    seconds = (time.perf_counter() - start) / len(group)
    results = []
    for (source, target), m in zip(group, maps):
        labels = block_model.labels_from_maps(m)
        write_labels(target, labels)
        results.append(ImageResult(source, target, "done", int(labels.max()), seconds))
    return results


def summary_table(results: Sequence[ImageResult]) -> str:
    """A plain-text table: one row per image, then totals."""
    width = max([len(r.input.name) for r in results] + [5])
    lines = [f"{'image':<{width}}  {'status':<7}  {'objects':>7}  {'seconds':>7}  note"]
    for r in results:
        objects = "" if r.objects is None else str(r.objects)
        note = r.reason if r.status != "done" else r.output.name
        lines.append(f"{r.input.name:<{width}}  {r.status:<7}  {objects:>7}  {r.seconds:7.2f}  {note}")
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    total = sum(r.seconds for r in results)
    lines.append(f"{len(results)} images: {counts['done']} segmented, {counts['skipped']} skipped (output exists), "
                 f"{counts['failed']} failed; {total:.1f} s")
    return "\n".join(lines)


def objects_in(labels: np.ndarray) -> int:
    return int(np.unique(labels[labels > 0]).size)
