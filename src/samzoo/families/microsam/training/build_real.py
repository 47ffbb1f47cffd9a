"""Turn a finished real-data training run into a shipped model file (float16 storage).

    python -m samzoo.families.microsam.training.build_real RUN_CHECKPOINT OUT.pt --name samzoo-em-tiny \
        --object-diameter 24.5 --description "..." [--metrics results.json]

Records in the model's metadata: name, description, the median training-object diameter (what
``segment(..., diameter=)`` rescales to), the run's recipe / iterations / CPU seconds (stamped by
the trainer) and, when given, the val-split results; the AIS parameters stay those of the run's
checkpoint. The choice of checkpoint is made before, by validation only
(``benchmarks/real_data_val.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ....errors import InputError
from ..checkpoint import load_checkpoint, save_checkpoint


def build(checkpoint: str | Path, out: str | Path, *, name: str, description: str, object_diameter: float,
          metrics: dict | None = None, version: str | None = None) -> Path:
    if object_diameter <= 0:
        raise InputError(f"object diameter must be > 0 px, got {object_diameter}")
    model = load_checkpoint(checkpoint)
    meta = dict(model.metadata)
    meta.pop("tuning", None)  # the warm start's synthetic tuning record does not describe this model
    meta.pop("fp16_check", None)
    meta.pop("sample_image", None)
    meta.update({"name": name, "description": description, "object_diameter": {"median": float(object_diameter)}})
    if version:
        meta["version"] = version
    if metrics is not None:
        meta["metrics"] = metrics
    model.metadata = meta
    return save_checkpoint(model, out, half=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--object-diameter", type=float, required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("--metrics", type=Path, default=None, help="JSON of val-split results to record")
    args = parser.parse_args(argv)
    metrics = json.loads(args.metrics.read_text()) if args.metrics else None
    path = build(args.checkpoint, args.out, name=args.name, description=args.description,
                 object_diameter=args.object_diameter, metrics=metrics, version=args.version)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    import samzoo  # noqa: F401  (torchvision fix)

    raise SystemExit(main())
