"""Proof for the training issue: a short CPU fine-tune of the shipped default model on generated
data improves both automatic (AIS) and interactive segmentation on held-out generated data.

    python benchmarks/finetune_proof.py --iterations 300 --out runs/finetune-proof

Held-out images use a seed the training never draws from; the AIS parameters stay the shipped ones.
"""

from __future__ import annotations

import argparse
import json
import time

import samzoo
from samzoo.evaluation.evaluate import evaluate
from samzoo.models.default import default_checkpoint_path
from samzoo.training.config import preset_config
from samzoo.training.synthetic import SyntheticConfig, generate_dataset
from samzoo.training.trainer import Trainer


def scores(model, images, labels) -> dict[str, float]:
    ais = evaluate(model, images, labels, mode="ais", progress=False).mean
    inter = evaluate(model, images, labels, mode="interactive", n_iterations=1, progress=False).mean
    return {"ais_msa": ais.get("msa"), **{f"interactive_{k}": v for k, v in inter.items()
                                          if k in ("iou", "dice", "msa") and isinstance(v, float)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=6)
    parser.add_argument("--out", default="runs/finetune-proof")
    args = parser.parse_args()

    look = SyntheticConfig(shape=(384, 384), styles={"fluorescence": 1.0}, kinds={"nuclei": 1.0})
    held_out = list(generate_dataset(args.n_test, seed=90210, config=look))
    images, labels = [im for im, _ in held_out], [lb for _, lb in held_out]

    before_model = samzoo.load_checkpoint(default_checkpoint_path())
    before = scores(before_model, images, labels)
    config = preset_config(
        "tiny-cpu", out_dir=args.out, model_changes={}, init_checkpoint=str(default_checkpoint_path()),
        iterations=args.iterations, lr=5e-5, warmup_iterations=5, val_every=10**9, save_every=100,
        max_minutes=30, n_sub_iterations=2,
    )
    start = time.perf_counter()
    trainer = Trainer(config, resume=False)
    trainer.fit()
    trained = trainer.model.eval()
    trained.ais_params = dict(before_model.ais_params)
    after = scores(trained, images, labels)
    result = {"iterations": args.iterations, "train_seconds": round(time.perf_counter() - start, 1),
              "held_out": f"{args.n_test} generated fluorescence nuclei images 384x384, seed 90210",
              "before": before, "after": after}
    print(f"{'metric':24s} {'before':>8s} {'after':>8s}")
    for key in before:
        print(f"{key:24s} {before[key]:8.4f} {after.get(key, float('nan')):8.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
