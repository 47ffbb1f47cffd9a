"""μSAM's training objective for the shared loop (``samzoo.training.loop``): SAM (iterative
prompts) and the AIS decoder trained jointly.

Each iteration encodes the batch once; the AIS loss (torch-em's Dice-based distance loss) and the
interactive loss (see ``interactive``) share that embedding, and one optimizer step updates both.
(micro-sam's trainer runs the encoder twice, once per head.) The heads are back-propagated one
after the other into the shared embedding, then the encoder once (``JointLoss.backward_staged``),
so only one head's activations are alive at a time. Batches and prompts are pure functions of
``(seed, iteration)``, which is what lets the loop resume a run exactly.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ....errors import CheckpointError
from ....training.data import PatchSampler, build_source, fixed_samples, sample_batch
from ....training.provenance import describe_data, run_metadata
from ....training.recompute import encode_with_recomputation
from ....training.replay import can_build, mix_replay, recorded_training_data
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import preset
from ..model import SamzooModel
from .config import TrainConfig
from .interactive import interactive_loss, prompt_dice
from .lora import apply_lora, has_lora, merge_lora
from .losses import ais_loss_fn
from .targets import MIN_OBJECT_SIZE, ais_target


def freeze(model: SamzooModel, parts: list[str]) -> None:
    """Switch off gradients of the named parts (``image_encoder`` ... ``ais_decoder``; the AIS
    decoder's own layers only, its encoder is the image encoder), and run their batch-norm layers
    as at inference: in training mode they would normalise with the batch's statistics and
    overwrite their running statistics, so a "frozen" AIS decoder would still change."""
    for part in parts:
        if part == "ais_decoder":
            modules = [m for n, m in model.ais_decoder.named_children() if n != "encoder"]
        else:
            modules = [getattr(model.sam, part)]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(False)
            for layer in module.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.register_forward_pre_hook(_run_as_at_inference)


def _run_as_at_inference(layer: torch.nn.Module, inputs) -> None:
    layer.training = False


def build_sampler(config: TrainConfig, sources: list[dict[str, Any]], augment: bool,
                  normalization: str = "percentile") -> PatchSampler:
    """Patches normalised as inference will normalise them for this model (``normalization``),
    with μSAM's AIS target (foreground, center and boundary distances) beside the labels."""
    return PatchSampler(
        sources=[build_source(s, config.patch_size) for s in sources],
        weights=[float(s.get("weight", 1.0)) for s in sources],
        patch_size=config.patch_size, min_objects=config.min_objects,
        background_probability=config.background_probability, augment=augment, normalization=normalization,
        targets=partial(ais_target, min_size=MIN_OBJECT_SIZE),
    )


class JointLoss(torch.nn.Module):
    """The loss of one batch as a module (so it can be wrapped in DistributedDataParallel):
    one encoder pass, the AIS loss and the interactive loss on the same embeddings."""

    def __init__(self, model: SamzooModel, config: TrainConfig, sample_offset: int = 0,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.model = model
        self.config = config
        self.sample_offset = sample_offset  # distinct prompt randomness per DDP rank
        self.device = torch.device(device)
        self.ais_loss = ais_loss_fn()

    def autocast(self) -> torch.autocast:
        """micro-sam's mixed precision: bfloat16 on CPU, float16 on CUDA; losses stay float32."""
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.config.mixed_precision)

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of both losses, one graph (what DDP needs: one backward per step)."""
        embeddings, input_shape = self.encode(batch)
        stats: dict[str, float] = {}
        total = torch.zeros(())
        for loss in (self.ais_part(batch, embeddings, input_shape, stats),
                     self.interactive_part(batch, embeddings, input_shape, step, stats)):
            if loss is not None:
                total = total + loss
        stats["loss"] = float(total.detach())
        return total, stats

    def backward_staged(self, batch: dict[str, torch.Tensor], step: int, scale=lambda loss: loss) -> dict[str, float]:
        """The same gradients as ``forward(...)[0].backward()``, with less memory: each head's
        loss is back-propagated to a detached copy of the embeddings as soon as it is computed
        (freeing that head's activations), then the encoder's graph once with the summed
        embedding gradient. The AIS decoder's full-resolution activations and the prompt
        decoder's sub-iterations are never alive at the same time. ``scale``: the gradient
        scaler's ``scale`` under float16 (the embedding gradient then carries the same scale)."""
        embeddings, input_shape = self.encode(batch)
        detached = embeddings.detach().requires_grad_(embeddings.requires_grad)
        stats: dict[str, float] = {}
        total = 0.0
        heads = (lambda: self.ais_part(batch, detached, input_shape, stats),
                 lambda: self.interactive_part(batch, detached, input_shape, step, stats))
        for head_loss in heads:
            loss = head_loss()
            if loss is not None:
                total += float(loss.detach())
                if loss.requires_grad:
                    scale(loss).backward()
                del loss
        if embeddings.requires_grad and detached.grad is not None:
            embeddings.backward(detached.grad)
        stats["loss"] = total
        return stats

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
        with self.autocast():
            x, input_shape = self.model.preprocess(batch["image"].to(self.device))
            if self.config.recompute_encoder:
                return encode_with_recomputation(self.model.sam.image_encoder, x), input_shape
            return self.model.sam.image_encoder(x), input_shape

    def ais_part(self, batch, embeddings, input_shape, stats) -> torch.Tensor | None:
        if self.config.ais_weight <= 0:
            return None
        with self.autocast():
            pred = self.model.decode_ais(embeddings, input_shape, tuple(batch["image"].shape[-2:]))
        ais = self.ais_loss(pred.float(), batch["target"].to(self.device))
        stats["loss_ais"] = float(ais.detach())
        return self.config.ais_weight * ais

    def interactive_part(self, batch, embeddings, input_shape, step, stats) -> torch.Tensor | None:
        cfg = self.config
        if cfg.interactive_weight <= 0:
            return None
        parts = []
        for b in range(batch["image"].shape[0]):
            rng = np.random.default_rng([cfg.seed, step, self.sample_offset + b, 7])
            with self.autocast():
                res = interactive_loss(
                    self.model.sam, embeddings[b:b + 1], batch["labels"][b].numpy(), input_shape, rng,
                    n_objects=cfg.n_objects, n_sub_iterations=cfg.n_sub_iterations,
                    box_probability=cfg.box_probability, mask_prompt_probability=cfg.mask_prompt_probability)
            if res is not None:
                parts.append(res)
        if not parts:
            return None
        inter = torch.stack([p[0] for p in parts]).mean()
        stats["loss_interactive"] = float(inter.detach())
        for key in parts[0][1]:
            stats[key] = float(np.mean([p[1][key] for p in parts]))
        return cfg.interactive_weight * inter


class MicrosamObjective:
    """μSAM for :class:`samzoo.training.loop.TrainingLoop`: the model (from an architecture
    preset, or ``init_checkpoint``: a path or any model ID), patches with AIS targets, the joint
    loss, validation (AIS loss + box / point Dice) and LoRA merged into saved checkpoints."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.sampler: PatchSampler | None = None  # built once the model's normalisation is known
        self.val_sampler: PatchSampler | None = None
        self._val_set: list[dict[str, np.ndarray]] | None = None
        self.ais_loss = ais_loss_fn()  # validation scores with the training loss
        self._parent_data: list[dict[str, Any]] | None = None  # init_checkpoint's recorded data (replay)
        self._sources: list[dict[str, Any]] | None = None  # config.data with replay mixed in, made once

    # models
    def initial_model(self) -> SamzooModel:
        config = self.config
        if config.init_checkpoint:  # a path or any model ID (vit_b, vit_b_lm, hf://..., a DOI)
            from ....api import load_model

            model = load_model(config.init_checkpoint)
            if not isinstance(model, SamzooModel):
                raise CheckpointError(f"{config.init_checkpoint}: not a μSAM model; a μSAM run starts from one "
                                      "(or from an architecture preset)")
            self._parent_data = recorded_training_data(model.metadata)
            # the child describes itself and names its parent; nothing the parent measured carries over
            described = dataclasses.replace(config, data=self.training_sources()) if config.replay else config
            model.metadata = run_metadata(described, model.metadata, str(config.init_checkpoint))
            return model
        torch.manual_seed(config.seed)
        return SamzooModel(preset(config.model, **config.model_changes), metadata=run_metadata(config))

    def load_model(self, path: Path) -> SamzooModel:
        return load_checkpoint(path)

    def save_model(self, model: SamzooModel, path: Path) -> None:
        save_checkpoint(model, path)

    def prepare(self, model: SamzooModel) -> None:
        config = self.config
        if model.ais_decoder is None and config.ais_weight > 0:
            raise CheckpointError("the model has no AIS decoder; set ais_weight: 0 to train SAM only")
        freeze(model, config.freeze)
        if config.lora_rank > 0:
            apply_lora(model, config.lora_rank, config.lora_alpha)
        self.normalization = model.config.normalization

    def exported(self, model: SamzooModel) -> SamzooModel:
        """The model as a plain samzoo model (LoRA merged into the qkv weights)."""
        if not has_lora(model):
            return model
        return merge_lora(copy.deepcopy(model))

    # training
    def loss_module(self, model: SamzooModel, device: torch.device, rank: int) -> "JointLoss":
        config = self.config
        self.sampler = build_sampler(config, self.training_sources(), augment=config.augment,
                                     normalization=self.normalization)
        return JointLoss(model, config, sample_offset=rank * config.batch_size, device=device)

    def training_sources(self) -> list[dict[str, Any]]:
        """``config.data``, with ``config.replay`` of the samples from the parent's own data."""
        config = self.config
        if config.replay <= 0:
            return list(config.data)
        if self._sources is None:
            if self._parent_data is None:  # resumed run: the parent was not loaded by initial_model
                from ....api import load_model

                self._parent_data = recorded_training_data(load_model(config.init_checkpoint).metadata)
            self._sources = mix_replay(config.data, self._parent_data, config.replay,
                                       can_build(lambda source: build_source(source, config.patch_size)))
        return list(self._sources)

    def batch(self, iteration: int, rank: int) -> dict[str, torch.Tensor]:
        config = self.config
        return sample_batch(self.sampler, config.seed, iteration, config.batch_size, first=rank * config.batch_size)

    # validation
    def val_set(self) -> list[dict[str, np.ndarray]]:
        if self._val_set is None:
            sources = self.config.val_data or self.config.data
            self.val_sampler = build_sampler(self.config, sources, augment=False, normalization=self.normalization)
            self._val_set = fixed_samples(self.val_sampler, self.config.seed + 1, self.config.n_val)
        return self._val_set

    def validate(self, model: SamzooModel, device: torch.device) -> dict[str, float]:
        cfg = self.config
        rows = []
        for sample in self.val_set():
            image = torch.from_numpy(sample["image"])[None].to(device)
            emb, input_shape = model.embed(image)
            row = {}
            if model.ais_decoder is not None:
                pred = model.decode_ais(emb, input_shape, tuple(image.shape[-2:]))
                target = torch.from_numpy(sample["target"])[None].to(device)
                row["val_ais_loss"] = float(self.ais_loss(pred, target))
            dice = prompt_dice(model.sam, emb, sample["labels"], input_shape)
            row.update({f"val_{k}": v for k, v in dice.items()})
            rows.append(row)
        out = {k: float(np.mean([r[k] for r in rows if k in r])) for k in {k for r in rows for k in r}}
        metric = 0.0
        if "val_ais_loss" in out and cfg.ais_weight > 0:
            metric += cfg.ais_weight * out["val_ais_loss"]
        if "val_dice_box" in out and cfg.interactive_weight > 0:
            metric += cfg.interactive_weight * (1 - 0.5 * (out["val_dice_box"] + out["val_dice_point"]))
        out["val_metric"] = metric
        return out

    def validation_data(self) -> tuple[int, str]:
        cfg = self.config
        where = describe_data(cfg.val_data or cfg.data)["description"]
        return cfg.n_val, f"{cfg.n_val} fixed validation samples (seed {cfg.seed + 1}) of {where}"
