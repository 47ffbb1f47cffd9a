"""``samzoo train CONFIG.yaml | --preset NAME`` (registered by ``samzoo.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .. import cli_options as opts
from ..errors import InputError


def _train(args: argparse.Namespace) -> int:
    from .config import load_config, preset_config, read_config_data

    if (args.config is None) == (args.preset is None):
        raise InputError("give either a CONFIG.yaml or --preset NAME (not both)")
    if args.iterations is not None and args.iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {args.iterations}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise InputError(f"--max-minutes must be > 0, got {args.max_minutes}")
    settings = read_config_data(args.config) if args.config else {"preset": args.preset}
    family = _training_family(settings, args.registry)
    if family is not None and family.train is not None:
        overrides = {"out_dir": args.output, "iterations": args.iterations, "max_minutes": args.max_minutes}
        if args.device is not None:  # family trainers take a concrete torch device, not "auto"
            from ..devices import inference_device

            overrides["device"] = str(inference_device(args.device))
        with _hub_environment(args.offline, args.registry):
            family.train({**settings, **{k: v for k, v in overrides.items() if v is not None}}, progress=True)
        print(f"{family.title} training: best checkpoint in {args.output or settings.get('out_dir', '.')}/best.pt")
        return 0
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

    trainer = Trainer(config, resume=not args.restart, offline=args.offline, registry=args.registry)
    trainer.fit()
    print(f"checkpoints in {trainer.ckpt_dir} (best: best.pt, latest: latest.pt)")
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


def _training_family(settings: dict[str, Any], registry: list[str] | None = None):
    """The family a run trains: its preset's owner, the config's ``family:``, or the family of
    ``init_checkpoint`` (a local file's layout, or a registry entry's family); None: μSAM's trainer."""
    from pathlib import Path

    from ..families import all_families, detect_family, get_family

    if set(settings) == {"preset"}:
        return next((f for f in all_families() if settings["preset"] in f.train_presets), None)
    if "family" in settings:
        return get_family(settings["family"])
    init = settings.get("init_checkpoint")
    if not init:
        return None
    if Path(str(init)).is_file():
        from ..state_files import read_state

        return detect_family(read_state(init), Path(str(init)).name)
    from ..registry import load_registry

    entry = load_registry(registry, offline=True).get(str(init))
    return get_family(entry.family) if entry is not None else None


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model (μSAM: SAM + AIS decoder; SAMCell: distance map; the family comes from the config)")
    p.add_argument("config", nargs="?", help="training config YAML (see samzoo.training.config.TrainConfig)")
    p.add_argument("--preset", help="a named training preset instead of a YAML file: test (seconds), finetune-cpu (minutes: "
                        "300 iterations, ~5 min on an idle 2-core CPU, and it stops after 10 min of training "
                        "on a slower one; fine-tunes the shipped model on data/train + data/val folders), finetune (GPU, from vit_b), "
                        "tiny-from-scratch (~90 min CPU), lm-generalist, em-organelles, specialist; "
                        "samcell-tiny-cpu, samcell-finetune")
    opts.add_output(p, "output folder (overrides out_dir)", old="--out")
    p.add_argument("--iterations", type=int, help="override the number of iterations (>= 1)")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]", help="override the config's device")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time (checkpoints are kept)")
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
