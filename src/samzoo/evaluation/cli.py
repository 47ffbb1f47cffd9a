"""CLI subcommands of the evaluation: ``samzoo evaluate`` and ``samzoo tune``.

Wiring (in samzoo/cli.py): add ``"samzoo.evaluation.cli"`` to ``PLUGIN_MODULES``; ``register``
follows the contract described there (handlers return an exit code, user errors raise
``SamzooError``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError


def _parse_params(items) -> dict[str, Any]:
    from ..cli import parse_params

    return parse_params(items)


def _parse_grid(items) -> dict[str, list[float]]:
    """``["key=v1,v2,...", ...]`` -> {key: [numbers]}."""
    grid: dict[str, list[float]] = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise InputError(f"--grid {item!r} is not key=v1,v2,...")
        parsed = []
        for v in values.split(","):
            v = v.strip()
            try:
                parsed.append(int(v) if v.lstrip("-").isdigit() else float(v))
            except ValueError:
                raise InputError(f"--grid {key}: value {v!r} is not a number") from None
        grid[key] = parsed
    return grid


def register(subparsers: Any) -> None:
    """Add ``evaluate`` and ``tune`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate", help="score a model on annotated images (mSA, SA50; automatic or interactive)",
        description="Segment every image with MODEL and score it against its label image: mean segmentation "
                    "accuracy (mSA, IoU 0.5..0.95) and SA at IoU 0.5 per image and averaged. IMAGES and LABELS "
                    "are folders (files pair up in sorted order), glob patterns (quote them) or single files. "
                    "--mode interactive runs the μSAM protocol (box or point, then 7 corrections) and reports "
                    "the prompted objects' IoU/Dice/mSA after the first prompt and after the last correction.",
    )
    p.add_argument("model", metavar="MODEL", help="model ID, checkpoint or BioImage.IO package")
    p.add_argument("images", metavar="IMAGES", help="image folder, glob pattern or file")
    p.add_argument("labels", metavar="LABELS", help="label-image folder, glob pattern or file (0 = background)")
    p.add_argument("--mode", choices=("auto", "ais", "amg", "interactive"), default="auto",
                   help="auto (default): the model family's automatic segmentation (μSAM: ais); ais/amg: μSAM's modes")
    p.add_argument("--csv", default=None, metavar="OUT.csv",
                   help="also write the table (interactive: one row per image and iteration)")
    p.add_argument("--param", nargs="+", action="extend", default=None, metavar="KEY=VALUE",
                   help="AIS/AMG parameter overrides (e.g. foreground_threshold=0.6); interactive: batch_size, "
                        "min_object_size, max_objects, use_mask_prompt=0/1")
    p.add_argument("--start", choices=("box", "point"), default="box", help="interactive: first prompt")
    p.add_argument("--iterations", type=int, default=7, help="interactive: correction iterations (default 7)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "tune", help="grid-search the AIS (and AMG) parameters on validation images and save the tuned model",
        description="Compute the AIS decoder outputs of each validation image once, score every combination "
                    "of watershed parameters (mSA), and save MODEL as a samzoo checkpoint whose ais_params are "
                    "the best ones (packages built from it ship them as defaults).",
    )
    p.add_argument("model", metavar="MODEL", help="model ID, checkpoint or BioImage.IO package")
    p.add_argument("images", metavar="IMAGES", help="image folder, glob pattern or file")
    p.add_argument("labels", metavar="LABELS", help="label-image folder, glob pattern or file")
    p.add_argument("-o", "--output", required=True, help="tuned checkpoint to write (.pt)")
    p.add_argument("--grid", nargs="+", action="extend", default=None, metavar="KEY=V1,V2",
                   help="replace the default values searched for a parameter (e.g. min_size=0,50)")
    p.add_argument("--amg", action="store_true", help="also tune AMG thresholds (stored in the metadata)")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="write the full AIS table (best first)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_tune)


def _check_csv(path: str | None) -> Path | None:
    if path is None:
        return None
    target = Path(path)
    if target.suffix.lower() != ".csv":
        raise InputError(f"--csv must end with .csv: {path}")
    if target.is_dir():
        raise InputError(f"--csv is a folder: {path}")
    return target


def _interactive_params(params: dict[str, Any]) -> dict[str, Any]:
    allowed = {"batch_size", "min_object_size", "max_objects", "use_mask_prompt", "seed"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InputError(f"unknown interactive parameter(s) {unknown}; known: {sorted(allowed)}")
    if "use_mask_prompt" in params:
        if params["use_mask_prompt"] not in (0, 1):
            raise InputError("use_mask_prompt must be 0 or 1")
        params["use_mask_prompt"] = bool(params["use_mask_prompt"])
    return params


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, resolve_pairs, write_csv

    csv_path = _check_csv(args.csv)
    params = _parse_params(args.param)
    if args.mode == "interactive":
        params = _interactive_params(params)
    if args.iterations < 0:
        raise InputError(f"--iterations must be >= 0, got {args.iterations}")
    pairs = resolve_pairs(args.images, args.labels)
    result = evaluate(args.model, [p[0] for p in pairs], [p[1] for p in pairs], mode=args.mode, params=params,
                      start=args.start, n_iterations=args.iterations, progress=not args.quiet)
    print(result.format())
    if csv_path is not None:
        rows = result.iterations if args.mode == "interactive" else result.table
        write_csv(rows, csv_path)
        print(f"wrote {csv_path}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from ..families import family_of
    from ..segmentation.api import resolve_model
    from .evaluate import _read_pair, resolve_pairs
    from .family_search import family_grid_search

    output = Path(args.output)
    if output.suffix.lower() != ".pt":
        raise InputError(f"--output must end with .pt: {args.output}")
    csv_path = _check_csv(args.csv)
    grid = _parse_grid(args.grid)
    pairs = resolve_pairs(args.images, args.labels)
    data = [_read_pair(i, l) for i, l in pairs]
    model = resolve_model(args.model)
    family = family_of(model)
    if family.save is None:
        raise InputError(f"{family.title} models cannot be saved as checkpoints, so not tuned")
    images, labels = [d[0] for d in data], [d[1] for d in data]
    progress = not args.quiet
    if family.tune is not None:
        results = family.tune(model, images, labels, grid, progress=progress, amg=args.amg)
    else:
        if args.amg:
            raise InputError(f"--amg applies to μSAM models; this is a {family.title} model")
        results = [family_grid_search(model, images, labels, grid, progress=progress)]
        family.set_params(model, results[0].best.to_dict())
    for result in results:
        label = result.mode.upper() if result.mode in ("ais", "amg") else family.title
        print(f"{label}: best mSA {result.best_msa:.4f} (SA50 {result.best_sa50:.4f}) of {len(result.table)} "
              f"combinations on {len(images)} images in {result.seconds:.1f} s")
        print("  " + ", ".join(f"{k}={v:g}" for k, v in result.best.to_dict().items()))
    if csv_path is not None:
        results[0].to_csv(csv_path)
        print(f"wrote {csv_path}")
    family.save(model, output)
    print(f"wrote {output}")
    return 0
