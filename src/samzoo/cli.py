"""The samzoo command line: ``samzoo <command> ...`` (console script ``samzoo``).

Commands defined here: ``segment`` (automatic or prompt-based segmentation of one image) and
``demo``. Other parts of samzoo add theirs through a ``register(subparsers)`` function in
``samzoo.hub.cli``, ``samzoo.publishing.cli``, ``samzoo.packaging.cli`` and
``samzoo.training.cli``; a part that is not installed (ImportError) simply contributes nothing.

Contract for ``register(subparsers)``: add parsers with ``subparsers.add_parser(name, help=...)``
and ``set_defaults(func=handler)``, where ``handler(args)`` returns an exit code (or None for
0). Handlers raise :class:`samzoo.SamzooError` for user errors: ``main`` prints
``samzoo: error: <message>`` on one line to stderr and returns 2. Usage errors (unknown options,
missing arguments) are reported the same way. Any other exception is a bug and shows its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from . import cli_options as opts
from .errors import InputError, SamzooError
from .segmentation import runs as segment_runs

PLUGIN_MODULES = (
    "samzoo.hub.cli",
    "samzoo.publishing.cli",
    "samzoo.packaging.cli",
    "samzoo.training.cli",
    "samzoo.evaluation.cli",
)


class UsageError(SamzooError):
    """Bad command-line usage (reported like every other user error)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ------------------------------------------------------------------------------- argument parsing


def parse_points(text: str) -> tuple[list[list[float]], list[int]]:
    """``"x,y[,label];x,y[,label];..."`` -> points [[x, y], ...] and labels (default 1)."""
    points, labels = [], []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        values = [v.strip() for v in part.split(",")]
        if len(values) not in (2, 3):
            raise InputError(f"--points entry {part!r} is not x,y or x,y,label")
        try:
            x, y = float(values[0]), float(values[1])
        except ValueError:
            raise InputError(f"--points entry {part!r} has a coordinate that is not a number") from None
        label = 1
        if len(values) == 3:
            if values[2] not in ("0", "1"):
                raise InputError(f"--points entry {part!r}: the label must be 1 (positive) or 0 (negative)")
            label = int(values[2])
        points.append([x, y])
        labels.append(label)
    if not points:
        raise InputError("--points is empty; expected x,y[,label];...")
    return points, labels


def parse_boxes(text: str) -> list[list[float]]:
    """``"x0,y0,x1,y1;..."`` -> [[x0, y0, x1, y1], ...]."""
    boxes = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        values = part.split(",")
        if len(values) != 4:
            raise InputError(f"--boxes entry {part!r} is not x0,y0,x1,y1")
        try:
            boxes.append([float(v) for v in values])
        except ValueError:
            raise InputError(f"--boxes entry {part!r} has a coordinate that is not a number") from None
    if not boxes:
        raise InputError("--boxes is empty; expected x0,y0,x1,y1;...")
    return boxes


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: int | float}."""
    params: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise InputError(f"--param {item!r} is not key=value")
        try:
            number: Any = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise InputError(f"--param {key}: value {value!r} is not a number") from None
        params[key] = number
    return params


def parse_shape(text: str, name: str) -> int | tuple[int, int]:
    """``"N"`` or ``"H,W"``."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{name} must be N or H,W (integers), got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise InputError(f"{name} must be N or H,W, got {text!r}")


# ------------------------------------------------------------------------------- segment


def _add_segment(subparsers) -> None:
    p = subparsers.add_parser(
        "segment", help="segment an image (automatic, or from point/box prompts)",
        description="Segment a 2D image or a 3D stack. Without prompts: automatic instance segmentation "
                    "(--mode ais: the model's AIS decoder + watershed; --mode amg: SAM's automatic mask "
                    "generation). With --points/--boxes: interactive segmentation, one object per box (points "
                    "describe one object, or belong to the box containing them). Writes a label TIFF.",
    )
    p.add_argument("input", nargs="+",
                   help="image file (.tif/.tiff, .png, .jpg/.jpeg, .npy); several files, a folder, a glob or a .txt "
                        "list (batch); or a large array PATH[:KEY] in zarr/OME-Zarr/N5/HDF5 (blockwise)")
    opts.add_output(p, "label image to write (.tif/.tiff; never one of the inputs); a folder for a batch; a "
                       ".zarr/.ome.zarr/.n5/.h5[:KEY] store for a blockwise run", required=True)
    opts.add_model(p)
    p.add_argument("--mode", choices=("ais", "amg"), default=None,
                   help="automatic mode of μSAM models (default: ais); other families have one way to segment")
    p.add_argument("--overlay", default=None, metavar="PNG", help="also write an overlay picture (.png)")
    opts.add_overwrite(p)
    opts.add_tiling(p)
    opts.add_device(p)
    opts.add_offline(p)
    opts.add_registry(p)
    p.add_argument("--points", default=None, metavar="x,y[,label];...",
                   help="point prompts in pixels; label 1 = positive (default), 0 = negative")
    p.add_argument("--boxes", default=None, metavar="x0,y0,x1,y1;...", help="box prompts in pixels")
    p.add_argument("--param", nargs="+", action="extend", default=None, metavar="KEY=VALUE",
                   help="AIS (e.g. foreground_threshold=0.6, min_size=20) or AMG (e.g. pred_iou_thresh=0.8) "
                        "parameter overrides")
    p.add_argument("--diameter", type=float, default=None, metavar="PX",
                   help="typical object diameter in pixels: the image is rescaled so objects reach the size the "
                        "model was trained for (0: estimate it from a first pass, and rescale only outside the "
                        "model's trained range)")
    p.add_argument("--no-zoom-prompts", action="store_true",
                   help="decode box prompts on the image as it is, not on a window that shows each object at the "
                        "size the model was trained for (the default for models that state it, e.g. samzoo-lm-tiny)")
    p.add_argument("--no-clip-to-boxes", action="store_true",
                   help="keep the pixels of a box prompt's mask that lie outside its box (clipped by default for "
                        "models that state their object size, e.g. samzoo-lm-tiny)")
    p.add_argument("--no-embedding-cache", action="store_true",
                   help="do not read or write cached image embeddings")
    p.add_argument("--volume", action="store_true",
                   help="read a 3D array as a (Z, H, W) stack and merge objects across slices")
    p.add_argument("--channel-axis", type=int, default=None, choices=(0, -1), metavar="0|-1",
                   help="the axis of a 3D array that holds channels (needed for a (2|3, H, W) array without --volume)")
    opts.add_quiet(p)
    segment_runs.add_arguments(p)
    p.set_defaults(func=_run_segment)


def _run_segment(args: argparse.Namespace) -> int:
    from .devices import inference_device
    from .io import read_image, write_labels
    from .outputs import check_distinct_outputs, check_output_file

    scale = segment_runs.wants_scale(args)
    if scale:
        if args.overlay:
            raise InputError("--overlay applies to one image at a time, not to batches or blockwise runs")
        overlay = None
    else:
        args.input = args.input[0]
        inputs = (args.input,)
        output = check_output_file(args.output, "--output", inputs=inputs, overwrite=args.overwrite,
                                   suffixes=(".tif", ".tiff"))
        overlay = (check_output_file(args.overlay, "--overlay", inputs=inputs, overwrite=args.overwrite,
                                     suffixes=(".png",)) if args.overlay else None)
        check_distinct_outputs(output, overlay)
    device = inference_device(args.device)
    tile_shape = parse_shape(args.tile_shape, "--tile-shape") if args.tile_shape else None
    halo = parse_shape(args.halo, "--halo") if args.halo else None
    params = parse_params(args.param)
    interactive = args.points is not None or args.boxes is not None
    points = point_labels = boxes = None
    if args.points is not None:
        points, point_labels = parse_points(args.points)
    if args.boxes is not None:
        boxes = parse_boxes(args.boxes)
    if interactive:
        if args.mode is not None:
            raise InputError("--mode does not apply with --points/--boxes (prompts run interactive segmentation)")
        if params:
            raise InputError("--param does not apply with --points/--boxes")
        if args.volume:
            raise InputError("--points/--boxes work on 2D images, not with --volume")
        if args.diameter is not None:
            raise InputError("--diameter applies to automatic segmentation, not with --points/--boxes")
    elif args.no_zoom_prompts:
        raise InputError("--no-zoom-prompts applies to --points/--boxes")
    if args.no_clip_to_boxes and args.boxes is None:
        raise InputError("--no-clip-to-boxes applies to --boxes")
    if scale:
        if args.diameter is not None:
            raise InputError("--diameter applies to one image at a time, not to batches or blockwise runs")
        options: dict[str, Any] = {"params": params or None}
        if args.mode is not None:
            options["mode"] = args.mode
        return segment_runs.run(args, options=options, tile_shape=tile_shape, halo=halo)
    image = read_image(args.input)
    from .families import family_of
    from .segmentation.api import resolve_model, segment, segment_from_prompts, with_precision

    model = resolve_model(args.model, device=device, offline=args.offline, registry=args.registry)
    family = family_of(model)
    cache = not args.no_embedding_cache
    progress = not args.quiet
    options = {}
    if not interactive and args.mode is not None:
        if args.mode not in family.modes:
            raise InputError(f"--mode {args.mode}: {family.title} models have "
                             + (f"the modes {', '.join(family.modes)}" if family.modes else "no modes"))
        options["mode"] = args.mode
    if interactive:
        from .segmentation.api import _slices

        slices, volume = _slices(image, None, args.channel_axis)  # the same layout rule as automatic mode
        if volume:
            raise InputError(f"--points/--boxes work on 2D images; {args.input} is read as a volume of {len(slices)} slices")
        image = slices[0]
        if args.precision == "bfloat16":
            raise InputError("--precision bfloat16 applies to automatic segmentation, not with --points/--boxes")
        model = with_precision(model, args.precision)
        choices = {"zoom_prompts": False} if args.no_zoom_prompts else {}
        if args.no_clip_to_boxes:
            choices["clip_to_boxes"] = False
        labels = segment_from_prompts(image, model, points=points, point_labels=point_labels, boxes=boxes,
                                      tile_shape=tile_shape, halo=halo, embedding_cache=cache, progress=progress,
                                      **choices)
    else:
        size = {} if args.diameter is None else {"diameter": args.diameter}
        labels = segment(image, model, params=params or None, tile_shape=tile_shape, halo=halo,
                         embedding_cache=cache, progress=progress, is_volume=True if args.volume else None,
                         channel_axis=args.channel_axis, precision=args.precision, **options, **size)
    write_labels(output, labels)
    import numpy as np

    n_objects = int(np.unique(labels[labels > 0]).size)
    print(f"wrote {output} ({n_objects} objects, shape {'x'.join(map(str, labels.shape))})")
    if overlay is not None:
        _write_overlay(overlay, output, image, labels, points, point_labels, boxes)
    return 0


def _write_overlay(overlay: Path, labels_path: Path, image, labels, points, point_labels, boxes) -> None:
    """The overlay is an extra: when it fails, the labels (the result) are already written, so the
    run is not reported as failed -- a warning says what is missing and why."""
    from .visualize import save_overlay

    kwargs: dict[str, Any] = {}
    if points is not None:
        kwargs["points"] = points
        kwargs["point_labels"] = point_labels
    if boxes is not None:
        kwargs["boxes"] = boxes
    try:
        save_overlay(overlay, image, labels, **kwargs)
    except (SamzooError, OSError, ValueError) as err:
        print(f"samzoo: warning: the labels are in {labels_path}, but the overlay {overlay} could not be "
              f"written: {one_line(err)}", file=sys.stderr)
        return
    print(f"wrote {overlay}")


# ------------------------------------------------------------------------------- demo


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="segment the shipped sample image with the default model",
        description="Segment the sample nuclei image shipped with samzoo using the default model; writes the "
                    "labels (TIFF) and an overlay (PNG) and prints where they are.",
    )
    opts.add_output(p, "folder for the results (default: ./samzoo-demo); the demo replaces its own files "
                       "there (labels.tif, overlay.png, packages/)", old="--output-dir", default="samzoo-demo")
    opts.add_model(p)
    p.add_argument("--image", default=None, help="use another image instead of the shipped sample")
    opts.add_device(p)
    opts.add_offline(p)
    opts.add_registry(p)
    opts.add_quiet(p)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .outputs import check_writable_folder
    from .segmentation.api import resolve_model

    check_writable_folder(args.output, "demo output folder")  # before a model download, not after
    model = resolve_model(args.model, offline=args.offline, registry=args.registry)
    result = run_demo(args.output, model=model, image=args.image, progress=not args.quiet, device=args.device)
    print(result.summary())
    return 0


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="samzoo", description="Segment-Anything microscopy models as a model zoo.")
    parser.add_argument("--version", action="version", version=f"samzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_segment(subparsers)
    _add_demo(subparsers)
    for name in PLUGIN_MODULES:  # all ship inside samzoo: an import error is a bug, so it shows
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 2
        code = func(args)
        return 0 if code is None else int(code)
    except SamzooError as err:
        print(f"samzoo: error: {one_line(err)}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help / --version
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except KeyboardInterrupt:
        print("samzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `samzoo models --json | head`: the reader left; stop quietly like other tools
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not raise again
        return 141


if __name__ == "__main__":
    sys.exit(main())
