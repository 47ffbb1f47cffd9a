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


def train(config: Any = "test", *, resume: bool = True, progress: bool = True, **changes: Any) -> Path:
    """Train a model: ``config`` is a training preset name (``finetune-cpu``, ``test``, ...), a
    YAML path or a ``TrainConfig``; ``changes`` override its fields (``out_dir``, ``iterations``,
    ``data``, ...). Returns the path of the best checkpoint.

    >>> import samzoo
    >>> best = samzoo.train("finetune-cpu", data=[{"kind": "folder", "weight": 1.0,  # doctest: +SKIP
    ...                     "images": "my/images", "labels": "my/labels"}], val_data=None)
    """
    from .training.config import TrainConfig, load_config, preset_config
    from .training.trainer import BEST, Trainer

    if isinstance(config, TrainConfig):
        chosen = config.replace(**changes) if changes else config
    elif isinstance(config, os.PathLike) or str(config).endswith((".yaml", ".yml")):
        chosen = load_config(config)
        chosen = chosen.replace(**changes) if changes else chosen
    else:
        chosen = preset_config(str(config), **changes)
    trainer = Trainer(chosen, resume=resume, progress=progress)
    trainer.fit()
    return trainer.ckpt_dir / BEST


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
    """Grid-search the AIS (and with ``amg=True`` the AMG) parameters on validation pairs, store
    the best in the model, and save it to ``output`` (a .pt) when given. Returns the tuned model.

    >>> import samzoo
    >>> tuned = samzoo.tune("samzoo-lm-tiny", "val/images", "val/labels", "tuned.pt")  # doctest: +SKIP
    """
    from .evaluation.evaluate import _read_pair, resolve_pairs
    from .evaluation.grid_search import DEFAULT_AIS_GRID, ais_grid_search, amg_grid_search, store_result
    from .families.microsam.checkpoint import save_checkpoint
    from .outputs import check_output_file
    from .segmentation.api import resolve_model

    target = None
    if output is not None:
        target = check_output_file(output, "output", overwrite=overwrite, suffixes=(".pt",),
                                   inputs=[model] if isinstance(model, (str, os.PathLike)) else [])
    grid = dict(grid or {})
    pairs = resolve_pairs(images, labels)
    data = [_read_pair(i, l) for i, l in pairs]
    tuned = resolve_model(model)
    images_, labels_ = [d[0] for d in data], [d[1] for d in data]
    if tuned.has_ais_decoder:
        store_result(tuned, ais_grid_search(tuned, images_, labels_, {k: v for k, v in grid.items()
                                                                      if k in DEFAULT_AIS_GRID}, progress=progress))
    if amg:
        store_result(tuned, amg_grid_search(tuned, images_, labels_, {k: v for k, v in grid.items()
                                                                      if k not in DEFAULT_AIS_GRID}, progress=progress))
    if target is not None:
        save_checkpoint(tuned, target)
    return tuned
