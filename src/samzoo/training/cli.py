"""``samzoo train CONFIG.yaml | --preset NAME`` (registered by ``samzoo.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .. import cli_options as opts
from ..errors import InputError


def _train(args: argparse.Namespace) -> int:
    from .config import read_config_data
    from .dispatch import run_training

    if (args.config is None) == (args.preset is None):
        raise InputError("give either a CONFIG.yaml or --preset NAME (not both)")
    if args.iterations is not None and args.iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {args.iterations}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise InputError(f"--max-minutes must be > 0, got {args.max_minutes}")
    if args.device is not None:  # checked before any data is read: a missing GPU is the first thing to say
        from ..devices import inference_device

        inference_device(args.device)
    settings = read_config_data(args.config) if args.config else {"preset": args.preset}
    overrides = {"out_dir": args.output, "iterations": args.iterations, "max_minutes": args.max_minutes,
                 "device": args.device, "restart": True if args.restart else None, "replay": args.replay}
    with _hub_environment(args.offline, args.registry):
        family, result = run_training(settings, {k: v for k, v in overrides.items() if v is not None}, progress=True)
    if isinstance(result, Path):
        print(f"{family.title} training: best checkpoint {result}")
    else:
        print(f"{family.title} training: best checkpoint in {args.output or settings.get('out_dir', '.')}/best.pt")
    return 0


@contextlib.contextmanager
def _hub_environment(offline: bool | None, registry: list[str] | None) -> Iterator[None]:
    """--offline/--registry for a family's own trainer, which resolves its init model by ID itself:
    the flags are set as their documented environment equivalents (SAMZOO_OFFLINE, SAMZOO_REGISTRY)
    for the run, so the FamilySpec.train contract needs no hub arguments."""
    saved = {name: os.environ.get(name) for name in ("SAMZOO_OFFLINE", "SAMZOO_REGISTRY")}
    try:
        if offline is not None:
            os.environ["SAMZOO_OFFLINE"] = "1" if offline else "0"
        if registry:
            os.environ["SAMZOO_REGISTRY"] = os.pathsep.join([*filter(None, [saved["SAMZOO_REGISTRY"]]), *registry])
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model (μSAM: SAM + AIS decoder; SAMCell: distance map; Cellpose-SAM: flows; "
                                           "the family comes from the config)")
    p.add_argument("config", nargs="?", help="training config YAML; `family:` names the family (default μSAM: see "
                   "samzoo.families.microsam.training.config.TrainConfig)")
    p.add_argument("--preset", help="a named training preset instead of a YAML file: test (seconds), finetune-cpu (minutes: "
                        "300 iterations, ~5 min on an idle 2-core CPU, and it stops after 10 min of training "
                        "on a slower one; fine-tunes the shipped model on data/train + data/val folders), finetune (GPU, from vit_b), "
                        "tiny-from-scratch (~90 min CPU), lm-generalist, em-organelles, specialist; "
                        "samcell-tiny-cpu, samcell-finetune; cpsam-small-cpu, cpsam-finetune (Cellpose-SAM: "
                        "use them as 'preset:' in a YAML that names the image/label folders)")
    opts.add_output(p, "output folder (overrides out_dir)", old="--out")
    p.add_argument("--iterations", type=int, help="override the number of iterations (>= 1)")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]", help="override the config's device")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time (checkpoints are kept)")
    p.add_argument("--replay", type=float, metavar="FRACTION",
                   help="draw this fraction of the samples from the initial model's own recorded training data "
                        "(μSAM; a specialist then keeps more of what its generalist knew)")
    p.add_argument("--restart", action="store_true", help="ignore an existing latest checkpoint in the output folder")
    opts.add_offline(p)
    opts.add_registry(p)
    p.set_defaults(func=_train)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m samzoo.training.cli train ...``) until the main CLI wires it."""
    parser = argparse.ArgumentParser(prog="samzoo")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    import samzoo  # noqa: F401  (torchvision fix)

    raise SystemExit(main())
