"""``samzoo train CONFIG.yaml | --preset NAME`` (registered by ``samzoo.cli``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError


def _train(args: argparse.Namespace) -> int:
    from .config import load_config, preset_config, read_config_data

    if (args.config is None) == (args.preset is None):
        raise InputError("give either a CONFIG.yaml or --preset NAME (not both)")
    settings = read_config_data(args.config) if args.config else {"preset": args.preset}
    family = _training_family(settings)
    if family is not None and family.train is not None:
        overrides = {"out_dir": args.out, "iterations": args.iterations, "max_minutes": args.max_minutes}
        family.train({**settings, **{k: v for k, v in overrides.items() if v}}, progress=True)
        print(f"{family.title} training: best checkpoint in {args.out or settings.get('out_dir', '.')}/best.pt")
        return 0
    config = load_config(args.config) if args.config else preset_config(args.preset)
    changes: dict[str, Any] = {}
    if args.out:
        changes["out_dir"] = args.out
    if args.iterations:
        changes["iterations"] = args.iterations
    if args.max_minutes:
        changes["max_minutes"] = args.max_minutes
    if changes:
        config = config.replace(**changes)
    from .trainer import Trainer

    trainer = Trainer(config, resume=not args.restart)
    trainer.fit()
    print(f"checkpoints in {trainer.ckpt_dir} (best: best.pt, latest: latest.pt)")
    return 0


def _training_family(settings: dict[str, Any]):
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

    entry = load_registry(None, offline=True).get(str(init))
    return get_family(entry.family) if entry is not None else None


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model (μSAM: SAM + AIS decoder; SAMCell: distance map; the family comes from the config)")
    p.add_argument("config", nargs="?", help="training config YAML (see samzoo.training.config.TrainConfig)")
    p.add_argument("--preset", help="a named training preset instead of a YAML file (test, tiny-cpu, finetune; samcell-tiny-cpu, samcell-finetune)")
    p.add_argument("--out", help="output folder (overrides out_dir)")
    p.add_argument("--iterations", type=int, help="override the number of iterations")
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
