"""What a trained model says about itself: its own name, description, training data, measured
metrics, and the model it was fine-tuned from.

Why: a checkpoint's ``metadata`` is what packages and default model cards are built from
(``samzoo.packaging.metadata``). A model fine-tuned from another used to inherit the parent's
metadata unchanged -- name, description and the parent's *measured metrics* -- so its packages
presented the parent's numbers as its own. Training now starts the child's metadata afresh: the
parent is named under ``parent`` (reference, name, version), nothing the parent measured is
carried over, and the metrics are the ones this run measured on its validation set.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

#: metadata that describes the parent's own evaluation or tuning, never the child's
PARENT_ONLY = ("name", "description", "authors", "metrics", "tuning", "ais_params", "amg_params", "sample_image",
               "training", "training_data", "parent", "rescaled", "version")


def describe_data(sources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The training data of a run as a model card's ``training_data`` ({description, ids})."""
    parts, ids = [], []
    total = sum(float(s.get("weight", 1.0)) for s in sources) or 1.0
    for source in sources:
        kind = source.get("kind", "synthetic")
        share = f"{100 * float(source.get('weight', 1.0)) / total:.0f}%"
        if kind == "synthetic":
            options = source.get("synthetic") or {}
            detail = ", ".join(f"{k}={v}" for k, v in options.items()) if options else "default settings"
            parts.append(f"{share} synthetic images made by samzoo.training.synthetic ({detail})")
            ids.append("samzoo.training.synthetic")
        elif kind == "folder":
            parts.append(f"{share} annotated images from the folder {source.get('images')} "
                         f"(labels {source.get('labels')}, pattern {source.get('pattern', '*.tif*')})")
            ids.append(str(source.get("images")))
        elif kind == "torch_em":
            parts.append(f"{share} the torch-em dataset {source.get('dataset')}")
            ids.append(str(source.get("dataset")))
        elif kind == "split":
            parts.append(f"{share} real annotated images of the {source.get('set')} {source.get('split', 'train')} "
                         "split" + (" (replayed from the parent's data)" if source.get("replay") else ""))
            ids.append(str(source.get("set")))
        else:
            parts.append(f"{share} {kind} data")
    return {"description": "; ".join(parts) or "not recorded", "ids": list(dict.fromkeys(ids))}


def run_metadata(config: Any, parent_metadata: Mapping[str, Any] | None = None,
                 parent_ref: str | None = None) -> dict[str, Any]:
    """The metadata a model trained with ``config`` starts with. With a parent (``init_checkpoint``)
    everything the parent measured or was called is dropped; the parent is named under ``parent``."""
    meta = {k: v for k, v in dict(parent_metadata or {}).items() if k not in PARENT_ONLY}
    data = describe_data(config.data)
    meta["name"] = config.name
    meta["training_data"] = data
    if parent_ref is None:
        meta["description"] = f"{config.name}: trained from scratch by samzoo on {data['description']}."
        return meta
    parent_metadata = dict(parent_metadata or {})
    parent = {"id": str(parent_ref)}
    for key in ("name", "version"):
        if parent_metadata.get(key):
            parent[key] = str(parent_metadata[key])
    bioimageio_id = bioimageio_reference(str(parent_ref))
    if bioimageio_id:
        parent["bioimageio_id"] = bioimageio_id
    meta["parent"] = parent
    label = parent.get("name") or parent["id"]
    if label != parent["id"]:
        label = f"{label} ({parent['id']})"
    meta["description"] = f"{config.name}: fine-tuned by samzoo from {label} on {data['description']}."
    return meta


def bioimageio_reference(ref: str) -> str | None:
    """The bioimage.io ID (``adjective-animal[/version]``) a model reference stands for: the reference
    itself, or the alias of the registry entry it names; None when it has none. No network."""
    import re

    from ..errors import SamzooError
    from ..hub.resolve import resolve

    pattern = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)+(?:/[0-9][0-9a-z.]*)?$")
    try:
        res = resolve(ref, offline=True)
    except SamzooError:
        return None
    candidates = [res.id] if res.kind == "bioimageio" else list(res.entry.aliases) if res.entry else []
    return next((c.lower() for c in candidates if pattern.match(c.lower())), None)


def validation_metrics(val: Mapping[str, float], *, iteration: int, n_images: int, data: str) -> dict[str, Any]:
    """``metadata["metrics"]["validation"]``: what this run measured on its validation samples."""
    out: dict[str, Any] = {k.removeprefix("val_"): round(float(v), 4) for k, v in val.items()}
    out.update(iteration=int(iteration), n_images=int(n_images), data=data)
    return out
