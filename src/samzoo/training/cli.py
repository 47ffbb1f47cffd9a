"""``samzoo train CONFIG.yaml | --preset NAME`` (registered by ``samzoo.cli``)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import cli_options as opts
from ..errors import InputError


def _train(args: argparse.Namespace) -> int:
    from .config import load_config, preset_config

    if (args.config is None) == (args.preset is None):
        raise InputError("give either a CONFIG.yaml or --preset NAME (not both)")
    if args.iterations is not None and args.iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {args.iterations}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise InputError(f"--max-minutes must be > 0, got {args.max_minutes}")
    config = load_config(args.config) if args.config else preset_config(args.preset)
    changes: dict[str, Any] = {}
    if args.output is not None:
        changes["out_dir"] = args.output
    if args.iterations is not None:
        changes["iterations"] = args.iterations
    if args.max_minutes is not None:
        changes["max_minutes"] = args.max_minutes
    if args.device is not None:
        changes["device"] = args.device
    if changes:
        config = config.replace(**changes)
    from ..outputs import check_writable_folder

    check_writable_folder(config.out_dir, "training output folder")
    from .trainer import Trainer

    trainer = Trainer(config, resume=not args.restart)
    trainer.fit()
    print(f"checkpoints in {trainer.ckpt_dir} (best: best.pt, latest: latest.pt)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a SAM + AIS decoder model (μSAM recipe)")
    p.add_argument("config", nargs="?", help="training config YAML (see samzoo.training.config.TrainConfig)")
    p.add_argument("--preset", help="a named training preset instead of a YAML file: test (seconds), finetune-cpu (minutes: "
                        "fine-tunes the shipped model on data/train + data/val folders), finetune (GPU, from vit_b), "
                        "tiny-from-scratch (~90 min CPU), lm-generalist, em-organelles, specialist")
    opts.add_output(p, "output folder (overrides out_dir)", old="--out")
    p.add_argument("--iterations", type=int, help="override the number of iterations (>= 1)")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]", help="override the config's device")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time (checkpoints are kept)")
    p.add_argument("--restart", action="store_true", help="ignore an existing latest checkpoint in the output folder")
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
