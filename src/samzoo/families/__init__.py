"""The family registry: the one place where shared code learns which model families exist.

A *family* is a kind of Segment-Anything microscopy model with its own network, checkpoint
layouts, inference and training objective (μSAM, SAMCell, Cellpose-SAM, CellSAM). Each lives in
its own sub-package ``samzoo.families.<name>`` whose ``__init__`` defines ``FAMILY``, a
:class:`FamilySpec` that says everything shared code may ask of it. Shared code (loading, the CLI,
segmentation of batches and volumes, evaluation, tuning, packaging, publishing, the training loop)
reaches a family only through :func:`get_family`, :func:`family_of` and :func:`detect_family`;
it never imports a family's internals. Adding a family is one line in ``FAMILY_MODULES``.

Family modules are imported on first use, so a family with heavy dependencies costs nothing
until one of its models is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, InputError

# name -> module defining FAMILY. The order is the order of detection and of listings.
FAMILY_MODULES: dict[str, str] = {
    "microsam": "samzoo.families.microsam",
    "cellpose_sam": "samzoo.families.cellpose_sam",
    "cellsam": "samzoo.families.cellsam",
    "samcell": "samzoo.families.samcell",
}


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """What a model family tells shared code (every callable takes and returns plain objects).

    name / title / summary: registry key (``family:`` in registry entries and checkpoint
        metadata), display name, one line for ``samzoo models`` / ``info``.
    licence: the licence note shown by ``samzoo info`` and written into packages.
    model_class: the ``nn.Module`` class of loaded models (``family_of`` dispatches on it).
    recognises(state) -> bool: whether a checkpoint's top-level dict has this family's layout.
    load(path, state, **options) -> model: build the network the checkpoint describes and load
        its weights strictly (``state`` is ``read_state(path)``; options such as ``decoder_path``).
    segment(image, model, *, params, tile_shape, halo, progress, **options) -> uint32 labels:
        automatic instance segmentation of a 2D image (volumes are the caller's business).
    params: dataclass of tunable post-processing parameters; ``param_grid`` the default grid that
        ``samzoo tune`` searches; ``model_params(model)`` the model's stored values.
    package(model, outdir, **options) -> {kind: zip path}: BioImage.IO packages of this family.
    segment_from_prompts(image, model, *, points, point_labels, boxes, ...) -> uint32 labels, one
        object per prompt; None for families without prompts.
    block_model(model, params, *, batch_size, precision) -> an object following
        ``samzoo.segmentation.blockwise.BlockModel`` (per-pixel maps of blocks, seeded-watershed
        inputs from maps): blockwise / distributed segmentation of large arrays and GPU-batched
        folders; None for families that do not support them yet.

    Optional, added later (defaults keep older families valid):
    modes: the automatic-segmentation modes ``segment`` takes as ``mode=`` (first = default); empty
        for families with one way to segment (``samzoo evaluate --mode`` is then not passed on).
    predict(image, model, *, progress) -> array: the network's output for one 2D image, and
        postprocess(output, params) -> uint32 labels, with ``params`` a ``params`` instance; together
        they equal ``segment``. Tuning runs the network once per image and post-processes many times.
    set_params(model, params: dict): store tuned parameters in the model (they travel in its
        checkpoint and become the defaults of ``segment``).
    save(model, path) -> path: write the model as this family's samzoo checkpoint.
    tune(model, images, labels, grid, *, progress, **options) -> list of GridSearchResult: a
        family's own search (μSAM: AIS on cached decoder outputs, AMG); None: the shared search on
        ``predict`` / ``postprocess`` over ``param_grid``.
    train(settings: dict, *, progress) -> the run's result (μSAM, Cellpose-SAM: the best
        checkpoint's path; SAMCell: its history): ``samzoo train`` / ``samzoo.train`` for this family
        (settings = the YAML config or ``{"preset": name}`` with the CLI's overrides; ``restart:
        true`` when asked to start over); ``train_presets`` the preset names it owns. A family's
        objective can run in ``samzoo.training.loop.TrainingLoop`` (μSAM and Cellpose-SAM do).
        None: the family cannot be trained.
    prompt_predictor(model) -> an object that keeps one image's embedding for many prompt calls:
        ``set_image(image)``, ``predict(points=, point_labels=, boxes=, mask_input=, multimask=)``
        -> (masks, scores, low-res logits), ``original_shape``, ``is_tiled``, ``is_image_set``;
        what the interactive evaluation protocol (``samzoo.evaluation.interactive``) drives. None:
        the family has no iterative prompting.
    architectures: the ``architecture`` values a registry entry of this family may give (the
        registry checks entries against them; ``samzoo.registry.FAMILY_ARCHITECTURES``).
    quantize(model) -> model: a copy for int8 CPU inference (``--precision int8``; μSAM: dynamic
        quantisation of the ViT linears); None: the family has no int8 path.
    """

    name: str
    title: str
    summary: str
    licence: str
    model_class: type
    recognises: Callable[[Mapping[str, Any]], bool]
    load: Callable[..., Any]
    segment: Callable[..., Any]
    params: type
    param_grid: Mapping[str, Sequence[Any]]
    model_params: Callable[[Any], Mapping[str, Any]]
    package: Callable[..., Mapping[str, Path]] | None = None
    segment_from_prompts: Callable[..., Any] | None = None
    block_model: Callable[..., Any] | None = None
    modes: tuple[str, ...] = ()
    predict: Callable[..., Any] | None = None
    postprocess: Callable[..., Any] | None = None
    set_params: Callable[[Any, Mapping[str, Any]], None] | None = None
    save: Callable[[Any, Any], Path] | None = None
    tune: Callable[..., Any] | None = None
    train: Callable[..., Any] | None = None
    train_presets: tuple[str, ...] = ()
    prompt_predictor: Callable[[Any], Any] | None = None
    architectures: tuple[str, ...] = ()
    quantize: Callable[[Any], Any] | None = None


def family_names() -> tuple[str, ...]:
    return tuple(FAMILY_MODULES)


def get_family(name: str) -> FamilySpec:
    """The family registered as ``name`` (a one-line error listing the known ones otherwise)."""
    module = FAMILY_MODULES.get(str(name))
    if module is None:
        raise InputError(f"unknown model family {name!r}; known: {', '.join(FAMILY_MODULES)}")
    # Family modules import segment-anything / torch-em, which import torchvision: make that import
    # work first, also for callers that reach the registry without `import samzoo` (samzoo.hub alone).
    from .._torchvision_fix import ensure_torchvision_importable

    ensure_torchvision_importable()
    return importlib.import_module(module).FAMILY


def all_families() -> list[FamilySpec]:
    return [get_family(name) for name in FAMILY_MODULES]


def family_architectures() -> dict[str, tuple[str, ...]]:
    """Family name -> the registry ``architecture`` names it accepts, in registration order."""
    return {family.name: tuple(family.architectures) for family in all_families()}


def family_of(model: Any) -> FamilySpec:
    """The family of a loaded model object."""
    for family in all_families():
        if isinstance(model, family.model_class):
            return family
    raise InputError(f"{type(model).__name__} is not a model of any samzoo family ({', '.join(FAMILY_MODULES)})")


def detect_family(state: Mapping[str, Any], source: str | Path = "checkpoint") -> FamilySpec:
    """The one family whose checkpoint layout ``state`` has; an error naming the file otherwise."""
    matches = [family for family in all_families() if family.recognises(state)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CheckpointError(
            f"{source}: not a checkpoint of any known model family ("
            + ", ".join(f"{f.title}" for f in all_families())
            + "); its top-level keys start with " + ", ".join(sorted({str(k).split('.')[0] for k in state})[:5])
        )
    raise CheckpointError(f"{source}: ambiguous layout, read by several families ({', '.join(f.name for f in matches)})")
