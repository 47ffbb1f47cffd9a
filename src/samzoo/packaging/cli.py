"""``samzoo package [-m MODEL] -o OUTDIR [--card model_cards/NAME.yaml] [--formats ...]``."""

from __future__ import annotations

import argparse

from .. import cli_options as opts


def _formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.replace(" ", ",").split(",") if f.strip())


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "package", help="export a model as BioImage.IO 0.5 packages (zip)",
        description="Write BioImage.IO model packages of a samzoo, micro-sam or SAM checkpoint: 'ais' "
                    "(image -> instance labels, watershed inside the model), 'ais_network' (one block -> AIS "
                    "decoder maps, TorchScript and ONNX weights, halo for blockwise consumers) and 'interactive' (image + prompts -> masks). "
                    "Every zip is complete or absent: nothing partial is left on errors.",
    )
    p.add_argument("model_positional", nargs="?", default=None, metavar="MODEL",
                   help="deprecated spelling of -m/--model")
    opts.add_model(p)
    opts.add_output(p, "folder for the zips (created if missing)", required=True, old="--outdir")
    p.add_argument("--card", default=None, metavar="YAML",
                   help="model card (model_cards/NAME.yaml); default: built from the checkpoint's metadata")
    p.add_argument("--formats", type=_formats, default=None, metavar="F[,F]",
                   help="weight formats (default: every format the model's family exports; μSAM: "
                        "pytorch_state_dict,torchscript,onnx); pytorch_state_dict is required")
    p.add_argument("--kinds", type=_formats, default=None, metavar="K[,K]",
                   help="package kinds to write (default: all the model supports; μSAM: ais, ais_network, "
                        "interactive; CellSAM: instance_segmentation, interactive = its SAM part)")
    p.add_argument("--sample-image", default=None, metavar="IMAGE",
                   help="image for test tensors and covers (default: the shipped sample, else synthetic)")
    opts.add_offline(p)
    opts.add_registry(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..outputs import check_writable_folder
    from . import package_model

    model = args.model
    if args.model_positional is not None:
        if model is not None:
            raise InputError("give the model once: -m/--model ID (the positional MODEL is its old spelling)")
        opts.deprecation_note("the positional MODEL of `samzoo package`", "-m/--model MODEL")
        model = args.model_positional
    check_writable_folder(args.output, "--output folder")
    from ..segmentation.api import resolve_model

    model = resolve_model(model, offline=args.offline, registry=args.registry)
    given = {"card": args.card, "sample_image": args.sample_image, "kinds": args.kinds, "formats": args.formats}
    options = {k: v for k, v in given.items() if v is not None}  # the family's defaults for the rest
    written = package_model(model, args.output, **options)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
