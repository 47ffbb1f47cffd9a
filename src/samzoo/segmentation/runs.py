"""``samzoo segment`` beyond one in-memory image: batches of files and blockwise / distributed runs.

Kept out of ``cli.py`` so the CLI only parses and dispatches: ``add_arguments`` adds the options,
``wants_scale`` says whether the inputs need this path, ``run`` does it and returns the exit code
(0 all done, 1 some images failed, user errors raise ``SamzooError`` -> exit 2).

Routing: several inputs, a folder, a glob or a ``.txt`` list -> batch (``batch``, one label
TIFF per image into ``-o DIR``); an input or output that is a zarr / OME-Zarr / N5 / HDF5
location, or ``--workers`` / ``--scheduler`` -> blockwise (``blockwise``), where a large TIFF
input is read by memory map.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..stores import is_store_location
from .api import PRECISIONS
from .batch import DEFAULT_NAME_PATTERN, LIST_SUFFIXES, segment_batch, summary_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many images, large arrays, clusters")
    g.add_argument("--name-pattern", default=None, metavar="PATTERN",
                   help=f"output file name per input in a batch (default {DEFAULT_NAME_PATTERN!r}; fields "
                        "{stem} {name} {suffix} {parent} {index})")
    g.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="inference precision: bfloat16 = autocast (GPUs, CPUs with AVX-512 BF16/AMX); int8 = "
                        "dynamically quantised ViT linears (CPU; the fast path on CPUs without BF16)")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images or blocks per encoder call (default 8 on a GPU, 1 on a CPU)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="blockwise on a dask LocalCluster of N worker processes")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="blockwise on a running dask scheduler (e.g. tcp://host:8786)")
    g.add_argument("--threads-per-worker", type=int, default=1, metavar="N", help="torch threads per dask worker")
    g.add_argument("--label-halo", type=int, default=None, metavar="PX",
                   help="watershed context around each block (default max(2 x halo, 128))")
    g.add_argument("--keep-scratch", action="store_true", help="keep the blockwise scratch store (decoder maps)")


def _is_many(text: str) -> bool:
    path = Path(text)
    return ((any(ch in text for ch in "*?[") and not path.exists())
            or (path.is_dir() and not is_store_location(text))
            or path.suffix.lower() in LIST_SUFFIXES)


def wants_scale(args: argparse.Namespace) -> bool:
    """Whether this ``segment`` call is a batch or a blockwise run (not one in-memory image)."""
    inputs = list(args.input)
    return (len(inputs) > 1 or any(_is_many(i) for i in inputs) or any(is_store_location(i) for i in inputs)
            or is_store_location(args.output) or args.workers is not None or args.scheduler is not None)


def resolve_device(text: str | None) -> str:
    """``--device`` as a torch device string (``samzoo.devices.inference_device`` decides)."""
    from ..devices import inference_device

    return str(inference_device(text))


def _model_fingerprint(model: Any, params: Any) -> dict[str, Any]:
    from .embedding_cache import model_fingerprint

    values = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params
    return {"model_sha256": model_fingerprint(model), "params": values}


def run(args: argparse.Namespace, *, options: dict[str, Any], tile_shape, halo) -> int:
    """Run a batch or blockwise ``segment`` (see the module docstring); ``options`` are the
    family options parsed by the CLI (mode, ais_params, ...)."""
    if args.points is not None or args.boxes is not None:
        raise InputError("--points/--boxes work on one image, not on batches or blockwise runs")
    if args.overlay:
        raise InputError("--overlay works on one image, not on batches or blockwise runs")
    if args.workers is not None and args.scheduler is not None:
        raise InputError("give --workers or --scheduler, not both")
    inputs = list(args.input)
    blockwise = (any(is_store_location(i) for i in inputs) or is_store_location(args.output)
                 or args.workers is not None or args.scheduler is not None)
    if blockwise:
        if len(inputs) != 1 or _is_many(inputs[0]) and not is_store_location(inputs[0]):
            raise InputError("blockwise runs (zarr/N5/HDF5 locations, --workers, --scheduler) take one input array")
        return _run_blockwise(args, inputs[0], options=options, tile_shape=tile_shape, halo=halo)
    if args.workers is not None or args.scheduler is not None:
        raise InputError("--workers/--scheduler apply to blockwise runs (a zarr/N5/HDF5 output)")
    return _run_batch(args, inputs, options=options, tile_shape=tile_shape, halo=halo)


def _load(args: argparse.Namespace):
    from .api import resolve_model

    model = resolve_model(args.model)
    return model.to(resolve_device(args.device))


def _run_batch(args, inputs, *, options, tile_shape, halo) -> int:
    if Path(args.output).suffix.lower() in (".tif", ".tiff"):
        raise InputError(f"-o {args.output}: with several inputs the output is a folder, not a file")
    device = resolve_device(args.device)  # fail before loading anything
    from .batch import check_writable, expand_inputs, plan_outputs

    plan_outputs(expand_inputs(inputs), args.output, args.name_pattern or DEFAULT_NAME_PATTERN)
    check_writable(Path(args.output))
    model = _load(args)
    kwargs = dict(options)
    if not args.no_embedding_cache:
        kwargs["embedding_cache"] = True
    results = segment_batch(inputs, args.output, model, name_pattern=args.name_pattern or DEFAULT_NAME_PATTERN,
                            overwrite=args.overwrite, progress=not args.quiet,
                            batch_size=args.batch_size or (8 if device != "cpu" else 1), tile_shape=tile_shape,
                            halo=halo, is_volume=True if args.volume else None, precision=args.precision,
                            **kwargs)
    print(summary_table(results))
    for r in results:
        if r.status == "failed":
            print(f"samzoo: failed: {r.input}: {r.reason}", file=__import__("sys").stderr)
    return 1 if any(r.status == "failed" for r in results) else 0


def _run_blockwise(args, text, *, options, tile_shape, halo) -> int:
    from ..families import family_of
    from ..stores import ArraySource, output_location
    from .blockwise import SerialExecutor, segment_blockwise

    if options.get("mode", "ais") != "ais":
        raise InputError("blockwise runs use the model's automatic maps (--mode ais), not AMG")
    if args.name_pattern:
        raise InputError("--name-pattern applies to batches of files, not to one blockwise output")
    output = output_location(args.output)
    source = ArraySource.open(text)
    if output.path.resolve() == source.location.path.resolve() and output.key == source.location.key:
        raise InputError(f"output {output} is the input; choose another output")
    model = _load(args)
    family = family_of(model)
    if family.block_model is None:
        raise InputError(f"{family.title} models do not support blockwise segmentation yet")
    device = str(model.device)
    block_model = family.block_model(model, options.get("ais_params") or options.get("params"),
                                     batch_size=args.batch_size or (8 if device != "cpu" else 1),
                                     precision=args.precision)
    fingerprint = _model_fingerprint(model, getattr(block_model, "params", None))
    if args.precision != "float32":  # float32 stores written before --precision existed stay complete
        fingerprint["precision"] = args.precision
    common = dict(tile_shape=tile_shape, halo=halo, label_halo=args.label_halo,
                  is_volume=True if args.volume else None, fingerprint=fingerprint, overwrite=args.overwrite,
                  keep_scratch=args.keep_scratch, progress=not args.quiet)
    if args.workers is not None or args.scheduler is not None:
        from .distributed import dask_executor

        with dask_executor(workers=args.workers, scheduler=args.scheduler,
                           threads_per_worker=args.threads_per_worker) as executor:
            result = segment_blockwise(source, output, block_model, executor=executor,
                                       torch_threads=args.threads_per_worker, **common)
    else:
        result = segment_blockwise(source, output, block_model, executor=SerialExecutor(), **common)
    if result.skipped:
        print(f"{output} is complete already (same input, model and parameters); --overwrite to redo")
        return 0
    shape = "x".join(map(str, result.shape))
    print(f"wrote {output} ({result.n_objects} objects, shape {shape}, {result.n_blocks} blocks, "
          f"{result.seconds:.1f} s)")
    return 0


