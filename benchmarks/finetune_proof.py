"""Proof for the training issue: a short CPU fine-tune of the shipped default model on generated
data improves both automatic (AIS) and interactive segmentation on held-out generated data.

    python benchmarks/finetune_proof.py --iterations 300 --out runs/finetune-proof

The run is a dataset specialist: the default model was trained on fluorescence images, and here it
is fine-tuned (``tiny-from-scratch`` preset settings, the default model's 8 px patches) on one other generated look,
phase-contrast nuclei by default. Held-out images use a seed the training never draws from; the AIS
parameters stay the shipped ones, so the gain is the network's, not re-tuning. The default model's
own look (fluorescence nuclei) is scored too, to show what the specialisation costs there;
``--replay 0.5`` mixes that look into the training data so the specialist keeps it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import samzoo
from samzoo.evaluation.evaluate import evaluate
from samzoo.default_model import default_checkpoint_path
from samzoo.families.microsam.training.config import preset_config
from samzoo.training.synthetic import SyntheticConfig, generate_dataset
from samzoo.families.microsam.training.trainer import Trainer

HELD_OUT_SEED = 90210
TUNING_SEED = 4242  # validation images for re-tuning the AIS parameters: neither training nor held-out


def held_out(style: str, kind: str, n: int, seed: int = HELD_OUT_SEED) -> tuple[list, list]:
    look = SyntheticConfig(shape=(384, 384), styles={style: 1.0}, kinds={kind: 1.0})
    pairs = list(generate_dataset(n, seed=seed, config=look))
    return [image for image, _ in pairs], [labels for _, labels in pairs]


def scores(model, images, labels) -> dict[str, float]:
    """AIS mSA, and the interactive protocol's first prediction (box or point from the ground
    truth) and first correction round."""
    ais = evaluate(model, images, labels, mode="ais", progress=False).mean
    inter = evaluate(model, images, labels, mode="interactive", n_iterations=1, progress=False).mean
    wanted = [f"{metric}_{round_}" for round_ in (0, 1) for metric in ("msa", "iou", "dice")]
    return {"ais_msa": ais["msa"], **{f"interactive_{key}": inter[key] for key in wanted}}


def _earlier_train_seconds(out: str) -> float | None:
    earlier = Path(out) / "finetune_proof.json"
    return json.loads(earlier.read_text()).get("train_seconds") if earlier.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--style", default="phase", help="generated look to specialise on")
    parser.add_argument("--kind", default="nuclei", help="nuclei or cells")
    parser.add_argument("--n-test", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--replay", type=float, default=0.0,
                        help="share of training samples drawn from the default model's own look (0: none)")
    parser.add_argument("--out", default="runs/finetune-proof")
    parser.add_argument("--n-tune", type=int, default=4,
                        help="validation images per trained look for re-tuning the AIS parameters (0: skip)")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate OUT/checkpoints/latest.pt of an earlier run instead of training again")
    args = parser.parse_args()

    looks = {"target": (args.style, args.kind), "default_look": ("fluorescence", "nuclei")}
    test_sets = {name: held_out(style, kind, args.n_test) for name, (style, kind) in looks.items()}

    before_model = samzoo.load_checkpoint(default_checkpoint_path())
    before = {name: scores(before_model, *data) for name, data in test_sets.items()}
    sources = [{"kind": "synthetic", "weight": 1.0 - args.replay,
                "synthetic": {"styles": {args.style: 1.0}, "kinds": {args.kind: 1.0}}}]
    if args.replay > 0:  # rehearse the original look so the specialist does not forget it
        sources.append({"kind": "synthetic", "weight": args.replay,
                        "synthetic": {"styles": {"fluorescence": 1.0}, "kinds": {"nuclei": 0.9, "cells": 0.1}}})
    config = preset_config(
        "tiny-from-scratch", out_dir=args.out, model_changes={},
        init_checkpoint=str(default_checkpoint_path()), data=sources, iterations=args.iterations,
        lr=args.lr, warmup_iterations=5, val_every=10**9, save_every=100, max_minutes=60,
    )
    start = time.perf_counter()
    latest = Path(args.out) / "checkpoints" / "latest.pt"
    if args.reuse and latest.is_file():
        trained = samzoo.load_checkpoint(latest).eval()
    else:
        trainer = Trainer(config, resume=False)
        trainer.fit()
        trained = trainer.model.eval()
    seconds = time.perf_counter() - start
    trained.ais_params = dict(before_model.ais_params)
    after = {name: scores(trained, *data) for name, data in test_sets.items()}

    retuned = {}
    if args.n_tune > 0:  # what a developer does next: `samzoo tune` on validation images of the trained looks
        from samzoo.families.microsam.grid_search import tune_model

        trained_looks = [looks["target"]] + ([looks["default_look"]] if args.replay > 0 else [])
        tune_images, tune_labels = [], []
        for style, kind in trained_looks:
            images, labels = held_out(style, kind, args.n_tune, seed=TUNING_SEED)
            tune_images += images
            tune_labels += labels
        tune_model(trained, tune_images, tune_labels, progress=False)
        retuned = {name: {"ais_msa": evaluate(trained, *data, mode="ais", progress=False).mean["msa"]}
                   for name, data in test_sets.items()}
        retuned["ais_params"] = dict(trained.ais_params)

    result = {"iterations": args.iterations, "train_seconds": _earlier_train_seconds(args.out) if args.reuse else round(seconds, 1), "lr": args.lr, "replay": args.replay,
              "n_sub_iterations": config.n_sub_iterations, "n_objects": config.n_objects,
              "held_out": {name: f"{args.n_test} generated {style} {kind} images 384x384, seed {HELD_OUT_SEED}"
                           for name, (style, kind) in looks.items()},
              "before": before, "after": after, "after_ais_retuned": retuned}
    for name in test_sets:
        print(f"\n{name}: {result['held_out'][name]}")
        print(f"{'metric':26s} {'before':>8s} {'after':>8s}")
        for key in before[name]:
            print(f"{key:26s} {before[name][key]:8.4f} {after[name][key]:8.4f}")
        if retuned:
            print(f"{'ais_msa, AIS re-tuned':26s} {'':8s} {retuned[name]['ais_msa']:8.4f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "finetune_proof.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
