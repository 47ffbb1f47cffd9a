"""CLI subcommands of the evaluation: ``samzoo evaluate`` and ``samzoo tune``.

Wiring (in samzoo/cli.py): add ``"samzoo.evaluation.cli"`` to ``PLUGIN_MODULES``; ``register``
follows the contract described there (handlers return an exit code, user errors raise
``SamzooError``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import cli_options as opts
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
    _add_data_arguments(p)
    opts.add_model(p)
    p.add_argument("--mode", choices=("auto", "ais", "amg", "interactive"), default="auto",
                   help="auto (default): the model family's automatic segmentation (μSAM: ais); ais/amg: μSAM's modes")
    p.add_argument("--csv", default=None, metavar="OUT.csv",
                   help="also write the table (interactive: one row per image and iteration)")
    p.add_argument("--write-metrics", default=None, metavar="OUT.pt",
                   help="save the model as a samzoo checkpoint with these mean scores in metadata['metrics'] "
                        "(packages and model cards then show them); never over the input model")
    opts.add_overwrite(p)
    opts.add_device(p)
    opts.add_offline(p)
    opts.add_registry(p)
    p.add_argument("--param", nargs="+", action="extend", default=None, metavar="KEY=VALUE",
                   help="AIS/AMG parameter overrides (e.g. foreground_threshold=0.6); interactive: batch_size, "
                        "min_object_size, max_objects, use_mask_prompt=0/1")
    p.add_argument("--start", choices=("box", "point"), default="box", help="interactive: first prompt")
    p.add_argument("--iterations", type=int, default=7, help="interactive: correction iterations (default 7)")
    opts.add_quiet(p)
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "tune", help="grid-search the AIS (and AMG) parameters on validation images and save the tuned model",
        description="Compute the AIS decoder outputs of each validation image once, score every combination "
                    "of watershed parameters (mSA), and save MODEL as a samzoo checkpoint whose ais_params are "
                    "the best ones (packages built from it ship them as defaults).",
    )
    _add_data_arguments(p)
    opts.add_model(p)
    p.add_argument("-o", "--output", required=True, help="tuned checkpoint to write (.pt)")
    opts.add_overwrite(p)
    opts.add_device(p)
    opts.add_offline(p)
    opts.add_registry(p)
    p.add_argument("--grid", nargs="+", action="extend", default=None, metavar="KEY=V1,V2",
                   help="replace the default values searched for a parameter (e.g. min_size=0,50)")
    p.add_argument("--amg", action="store_true", help="also tune AMG thresholds (stored in the metadata)")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="write the full AIS table (best first)")
    opts.add_quiet(p)
    p.set_defaults(func=cmd_tune)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="+", metavar="IMAGES LABELS",
                   help="image folder, glob pattern or file, then the label images the same way (0 = background); "
                        "a MODEL before them is the old spelling of -m/--model")


def _model_and_data(args: argparse.Namespace) -> tuple[str | None, str, str]:
    """(model, images, labels) from ``[MODEL] IMAGES LABELS`` and ``-m``; the positional model is the
    spelling of the previous release and still works, with a note."""
    if len(args.data) == 3:
        if args.model is not None:
            raise InputError("give the model once: -m/--model ID (a positional MODEL is its old spelling)")
        opts.deprecation_note(f"the positional MODEL of `samzoo {args.command}`", "-m/--model MODEL")
        return args.data[0], args.data[1], args.data[2]
    if len(args.data) != 2:
        raise InputError(f"expected IMAGES LABELS (and -m/--model MODEL), got {len(args.data)} paths")
    return args.model, args.data[0], args.data[1]


def _check_csv(path: str | None, args: argparse.Namespace, inputs: tuple) -> Path | None:
    from ..outputs import check_output_file

    if path is None:
        return None
    return check_output_file(path, "--csv", inputs=inputs, overwrite=args.overwrite, suffixes=(".csv",))


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
    from ..devices import inference_device
    from ..segmentation.api import resolve_model
    from .evaluate import evaluate, resolve_pairs, write_csv

    from ..outputs import check_distinct_outputs, check_output_file

    model_id, images, labels = _model_and_data(args)
    csv_path = _check_csv(args.csv, args, (images, labels, model_id))
    metrics_path = None
    if args.write_metrics:
        metrics_path = check_output_file(args.write_metrics, "--write-metrics", inputs=(images, labels, model_id),
                                         overwrite=args.overwrite, suffixes=(".pt",))
    check_distinct_outputs(csv_path, metrics_path)
    device = inference_device(args.device)
    params = _parse_params(args.param)
    if args.mode == "interactive":
        params = _interactive_params(params)
    if args.iterations < 0:
        raise InputError(f"--iterations must be >= 0, got {args.iterations}")
    pairs = resolve_pairs(images, labels)
    model = resolve_model(model_id, device=device, offline=args.offline, registry=args.registry)
    result = evaluate(model, [p[0] for p in pairs], [p[1] for p in pairs], mode=args.mode, params=params,
                      start=args.start, n_iterations=args.iterations, progress=not args.quiet)
    print(result.format())
    if csv_path is not None:
        rows = result.iterations if args.mode == "interactive" else result.table
        write_csv(rows, csv_path)
        print(f"wrote {csv_path}")
    if metrics_path is not None:
        _save_with_metrics(model, result, args, images, metrics_path)
        print(f"wrote {metrics_path}")
    return 0


def _save_with_metrics(model: Any, result: Any, args: argparse.Namespace, images: str, path: Path) -> None:
    """The model as a samzoo checkpoint whose ``metadata["metrics"]`` holds this evaluation's means
    (one entry per mode and data set, so several evaluations accumulate)."""
    from ..families import family_of

    family = family_of(model)
    if family.save is None or not isinstance(getattr(model, "metadata", None), dict):
        raise InputError(f"--write-metrics: {family.title} models cannot be saved with metrics")
    entry = {k: v for k, v in result.mean.items() if k != "image"}
    entry["n_images"] = len(result.rows)
    metrics = dict(model.metadata.get("metrics") or {})
    mode = args.mode if args.mode != "auto" else (family.modes[0] if family.modes else "automatic")
    metrics[f"{mode} on {Path(images).name or images}"] = entry
    model.metadata["metrics"] = metrics
    family.save(model.to("cpu"), path)


def cmd_tune(args: argparse.Namespace) -> int:
    from ..families import family_of
    from ..segmentation.api import resolve_model
    from .evaluate import _read_pair, resolve_pairs
    from .family_search import family_grid_search

    from ..devices import inference_device
    from ..outputs import check_distinct_outputs, check_output_file

    model_id, images_spec, labels_spec = _model_and_data(args)
    inputs = (images_spec, labels_spec, model_id)
    output = check_output_file(args.output, "--output", inputs=inputs, overwrite=args.overwrite, suffixes=(".pt",))
    csv_path = _check_csv(args.csv, args, inputs)
    check_distinct_outputs(output, csv_path)
    device = inference_device(args.device)
    grid = _parse_grid(args.grid)
    pairs = resolve_pairs(images_spec, labels_spec)
    data = [_read_pair(i, l) for i, l in pairs]
    model = resolve_model(model_id, device=device, offline=args.offline, registry=args.registry)
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
    family.save(model.to("cpu"), output)
    print(f"wrote {output}")
    return 0
