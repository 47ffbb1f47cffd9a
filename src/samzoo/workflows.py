"""The whole user journey as top-level functions: ``samzoo.fetch``, ``package``, ``publish``,
``train``, ``evaluate``, ``tune`` -- the same work as the CLI commands of the same names.

Each is a thin door into its package (imported on first call, so ``import samzoo`` stays fast)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def fetch(model_id: str | os.PathLike, **options: Any) -> Path:
    """Download (or find in the cache) a model's files, verified; returns the main local file.

    ``options``: ``offline``, ``registry``, ``progress``, ``refresh`` (see ``samzoo.hub.fetch``).

    >>> import samzoo
    >>> path = samzoo.fetch("vit_b_lm")  # doctest: +SKIP
    """
    from .hub import fetch as hub_fetch

    return hub_fetch(model_id, **options)


def package(model: Any = None, output: str | os.PathLike = "packages", **options: Any) -> dict[str, Path]:
    """Write BioImage.IO 0.5 packages of ``model`` (ID, path, loaded model; None = the shipped
    default) into the folder ``output``; returns ``{kind: zip path}``. ``options``: ``card``,
    ``formats``, ``sample_image``, ``kinds`` (see ``samzoo.packaging.package_model``).

    >>> import samzoo
    >>> zips = samzoo.package("tuned.pt", "packages/", card="model_cards/my-model.yaml")  # doctest: +SKIP
    """
    from .outputs import check_writable_folder
    from .packaging import package_model

    check_writable_folder(output, "package output folder")
    return package_model(model, output, **options)


def publish(packages: str | os.PathLike | Sequence[str | os.PathLike], to: str = "zenodo", *,
            repo: str | None = None, **options: Any) -> Any:
    """Publish package zip(s) to Zenodo (``to="zenodo"``, a DOI) or a Hugging Face repository
    (``to="hf"``, ``repo="ORG/REPO"``, a version tag). ``options``: ``card``, ``checkpoint``,
    ``dry_run``, and per target ``new_version_of``/``sandbox``/``new_draft`` or ``private``.

    >>> import samzoo
    >>> samzoo.publish("packages/ais.zip", to="zenodo", checkpoint="tuned.pt", dry_run=True)  # doctest: +SKIP
    """
    from .errors import PublishError

    paths = [packages] if isinstance(packages, (str, os.PathLike)) else list(packages)
    if to == "zenodo":
        if repo is not None:
            raise PublishError("repo= is for Hugging Face; Zenodo makes a record of its own")
        from .publishing.zenodo import publish_zenodo

        return publish_zenodo(paths, **options)
    if to in ("hf", "huggingface"):
        if not repo:
            raise PublishError('publishing to Hugging Face needs repo="ORG/REPO"')
        from .publishing.huggingface import publish_hf

        return publish_hf(paths, repo_id=repo, **options)
    raise PublishError(f"unknown publishing target {to!r}: use 'zenodo' or 'hf'")


def train(config: Any = "test", *, resume: bool = True, progress: bool = True, **changes: Any) -> Any:
    """Train a model: ``config`` is a training preset name (``finetune-cpu``, ``test``,
    ``samcell-tiny-cpu``, ...), a YAML path or a family's config object (μSAM: ``TrainConfig``);
    ``changes`` override its fields (``out_dir``, ``iterations``, ``data``, ...). The family comes
    from the config (``samzoo.training.dispatch``). Returns what the family's training returns:
    for μSAM the path of the best checkpoint.

    >>> import samzoo
    >>> best = samzoo.train("finetune-cpu", data=[{"kind": "folder", "weight": 1.0,  # doctest: +SKIP
    ...                     "images": "my/images", "labels": "my/labels"}], val_data=None)
    """
    from .training.config import read_config_data
    from .training.dispatch import run_training

    if hasattr(config, "to_dict"):  # a config object: its family says what it is
        settings = {**config.to_dict(), "family": config.family}
    elif isinstance(config, os.PathLike) or str(config).endswith((".yaml", ".yml")):
        settings = read_config_data(config)
    else:
        settings = {"preset": str(config)}
    if not resume:
        changes["restart"] = True
    return run_training(settings, changes, progress=progress)[1]


def evaluate(model: Any, images: Any, labels: Any, **options: Any) -> Any:
    """Score ``model`` on image/label pairs: folders, glob patterns or single files (paired in
    sorted order), or lists of arrays/paths. ``options``: ``mode`` (ais, amg, interactive),
    ``params``, ``start``, ``n_iterations``, ``progress``. Returns an ``EvaluationResult``
    (``.table`` rows, ``.format()``).

    >>> import samzoo
    >>> result = samzoo.evaluate("samzoo-lm-tiny", "val/images", "val/labels")  # doctest: +SKIP
    >>> print(result.format())  # doctest: +SKIP
    """
    from .evaluation.evaluate import evaluate as run_evaluation, resolve_pairs

    if isinstance(images, (str, os.PathLike)) and isinstance(labels, (str, os.PathLike)):
        pairs = resolve_pairs(images, labels)
        images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    return run_evaluation(model, images, labels, **options)


def tune(model: Any, images: Any, labels: Any, output: str | os.PathLike | None = None, *, amg: bool = False,
         grid: dict[str, Sequence[Any]] | None = None, overwrite: bool = False, progress: bool = True) -> Any:
    """Grid-search the model's post-processing parameters on validation pairs (μSAM: AIS, and with
    ``amg=True`` also AMG; other families: their ``param_grid``), store the best in the model, and
    save it to ``output`` (a .pt) when given. Returns the tuned model.

    >>> import samzoo
    >>> tuned = samzoo.tune("samzoo-lm-tiny", "val/images", "val/labels", "tuned.pt")  # doctest: +SKIP
    """
    from .evaluation.evaluate import _read_pair, resolve_pairs
    from .errors import InputError
    from .evaluation.family_search import family_grid_search
    from .families import family_of
    from .outputs import check_output_file
    from .segmentation.api import resolve_model

    target = None
    if output is not None:
        target = check_output_file(output, "output", overwrite=overwrite, suffixes=(".pt",),
                                   inputs=[model] if isinstance(model, (str, os.PathLike)) else [])
    pairs = resolve_pairs(images, labels)
    data = [_read_pair(i, l) for i, l in pairs]
    tuned = resolve_model(model)
    family = family_of(tuned)
    images_, labels_ = [d[0] for d in data], [d[1] for d in data]
    if family.tune is not None:
        family.tune(tuned, images_, labels_, dict(grid or {}), progress=progress, amg=amg)
    else:
        if amg:
            raise InputError(f"amg=True applies to μSAM models; this is a {family.title} model")
        result = family_grid_search(tuned, images_, labels_, grid, progress=progress)
        family.set_params(tuned, result.best.to_dict())
    if target is not None:
        if family.save is None:
            raise InputError(f"{family.title} models cannot be saved as checkpoints")
        family.save(tuned, target)
    return tuned
