"""The μSAM trainer: SAM (iterative prompts) and the AIS decoder trained jointly.

Each iteration encodes the batch once; the AIS loss (torch-em's Dice-based distance loss) and the
interactive loss (see ``interactive``) share that embedding, and one optimizer step updates both.
(micro-sam's trainer runs the encoder twice, once per head.) The heads are back-propagated one
after the other into the shared embedding, then the encoder once (``JointLoss.backward_staged``),
so only one head's activations are alive at a time.
Adam + ReduceLROnPlateau on the validation metric; ``best`` and ``latest`` checkpoints are samzoo
checkpoints (atomic); the optimizer/scheduler/iteration state lives in a separate file read with
``weights_only=True``; resume restores all of it, and because every batch and every prompt is a
pure function of ``(seed, iteration)``, a resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, InputError
from ..io import atomic_path
from ..families.microsam.checkpoint import load_checkpoint, save_checkpoint
from ..families.microsam.config import preset
from ..families.microsam.model import SamzooModel
from .config import TrainConfig, save_config
from .data import PatchSampler, build_source, fixed_samples, sample_batch
from .interactive import interactive_loss, prompt_dice
from .distributed import broadcast_float, barrier, distributed_context, local_rank
from .lora import apply_lora, has_lora, merge_lora
from .losses import ais_loss_fn
from .provenance import describe_data, run_metadata, validation_metrics
from .recompute import encode_with_recomputation

LATEST, BEST, STATE = "latest.pt", "best.pt", "latest_state.pt"


def resolve_device(name: str) -> torch.device:
    """``auto``: this rank's GPU (``LOCAL_RANK`` under torchrun) when CUDA is there, else the CPU;
    an explicit device that this machine lacks is an error, not a silent CPU run."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank()}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"training device {name!r} requested but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("training device 'mps' requested but MPS is not available here")
    return device


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def freeze(model: SamzooModel, parts: list[str]) -> None:
    """Switch off gradients of the named parts (``image_encoder`` ... ``ais_decoder``; the AIS
    decoder's own layers only, its encoder is the image encoder)."""
    for part in parts:
        if part == "ais_decoder":
            params = [p for n, p in model.ais_decoder.named_parameters() if not n.startswith("encoder.")]
        else:
            params = list(getattr(model.sam, part).parameters())
        for p in params:
            p.requires_grad_(False)


def build_sampler(config: TrainConfig, sources: list[dict[str, Any]], augment: bool,
                  normalization: str = "percentile") -> PatchSampler:
    """Patches normalised as inference will normalise them for this model (``normalization``)."""
    return PatchSampler(
        sources=[build_source(s, config.patch_size) for s in sources],
        weights=[float(s.get("weight", 1.0)) for s in sources],
        patch_size=config.patch_size, min_objects=config.min_objects, augment=augment,
        normalization=normalization,
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


class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = True, progress: bool = True,
                 offline: bool | None = None, registry: Any = None):
        """``offline``/``registry``: how an ``init_checkpoint`` ID is resolved (see ``samzoo.load_model``)."""
        self.config = config
        self.progress = progress
        torch.set_num_threads(config.threads)
        self.out = Path(config.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.out / "config.yaml")
        self.iteration = 0
        self.best_metric = math.inf
        self.stale_validations = 0  # validations since the best one (early stopping)
        self.history: list[dict[str, float]] = []
        self.last_validation: dict[str, float] | None = None  # recorded in the checkpoint's metrics
        self.last_validation_iteration = 0
        self.train_seconds = 0.0
        latest = self.ckpt_dir / LATEST
        resuming = resume and latest.is_file() and (self.ckpt_dir / STATE).is_file()
        if resuming:
            self.model = load_checkpoint(latest)
        elif config.init_checkpoint:  # a path or any model ID (vit_b, vit_b_lm, hf://..., a DOI)
            from ..api import load_model

            self.model = load_model(config.init_checkpoint, offline=offline, registry=registry)
            # the child describes itself and names its parent; nothing the parent measured carries over
            self.model.metadata = run_metadata(config, self.model.metadata, str(config.init_checkpoint))
        else:
            torch.manual_seed(config.seed)
            self.model = SamzooModel(preset(config.model, **config.model_changes),
                                     metadata=run_metadata(config))
        if self.model.ais_decoder is None and config.ais_weight > 0:
            raise CheckpointError("the model has no AIS decoder; set ais_weight: 0 to train SAM only")
        self.rank, self.world_size = distributed_context()
        self.device = resolve_device(config.device)
        freeze(self.model, config.freeze)
        if config.lora_rank > 0:
            apply_lora(self.model, config.lora_rank, config.lora_alpha)
        self.model.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience)
        # float16 needs loss scaling; bfloat16 (CPU) and float32 do not (then it is a no-op)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.mixed_precision and self.device.type == "cuda")
        if resuming:
            self._load_state()
        self.loss_module = JointLoss(self.model, config, sample_offset=self.rank * config.batch_size,
                                     device=self.device)
        self.ais_loss = self.loss_module.ais_loss  # validation scores with the training loss
        if self.world_size > 1:  # torchrun: gradients averaged over ranks, each rank its own batch
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids, find_unused_parameters=True)
        self.sampler = build_sampler(config, config.data, augment=config.augment,
                                     normalization=self.model.config.normalization)
        self._val_sampler = None
        self._val_set = None
        self._writer = None

    # ------------------------------------------------------------------ one step
    def step(self, batch: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One optimizer step on ``batch`` (default: the batch of the current iteration).

        One process back-propagates the two heads one after the other (``backward_staged``, less
        memory); under DDP the summed loss has one backward, as DDP's gradient hooks require."""
        self.model.train()
        if batch is None:
            batch = sample_batch(self.sampler, self.config.seed, self.iteration, self.config.batch_size,
                                 first=self.rank * self.config.batch_size)
        warmup = self.config.warmup_iterations
        if self.iteration < warmup:  # depends on the iteration only, so resume reproduces it
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr * (self.iteration + 1) / warmup
        self.optimizer.zero_grad(set_to_none=True)
        if self.world_size > 1:
            loss, stats = self.loss_module(batch, self.iteration)
            if loss.requires_grad:
                self.scaler.scale(loss).backward()
        else:
            stats = self.loss_module.backward_staged(batch, self.iteration, scale=self.scaler.scale)
        if any(p.grad is not None for p in self.params):
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
            self.scaler.step(self.optimizer)  # skips the step when float16 gradients overflowed
            self.scaler.update()
        self.iteration += 1
        return stats

    # ------------------------------------------------------------------ validation
    def val_set(self) -> list[dict[str, np.ndarray]]:
        if self._val_set is None:
            sources = self.config.val_data or self.config.data
            self._val_sampler = build_sampler(self.config, sources, augment=False,
                                              normalization=self.model.config.normalization)
            self._val_set = fixed_samples(self._val_sampler, self.config.seed + 1, self.config.n_val)
        return self._val_set

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        cfg, model = self.config, self.model
        model.eval()
        rows = []
        for sample in self.val_set():
            image = torch.from_numpy(sample["image"])[None].to(self.device)
            emb, input_shape = model.embed(image)
            row = {}
            if model.ais_decoder is not None:
                pred = model.decode_ais(emb, input_shape, tuple(image.shape[-2:]))
                target = torch.from_numpy(sample["target"])[None].to(self.device)
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

    # ------------------------------------------------------------------ checkpoints
    def _stamp(self) -> None:
        meta = dict(self.model.metadata)
        meta["training"] = {"config": self.config.to_dict(), "iteration": self.iteration,
                            "train_seconds": round(self.train_seconds, 1)}
        if self.last_validation:
            sources = self.config.val_data or self.config.data
            where = describe_data(sources)["description"]
            metrics = dict(meta.get("metrics") or {})
            metrics["validation"] = validation_metrics(
                self.last_validation, iteration=self.last_validation_iteration, n_images=self.config.n_val,
                data=f"{self.config.n_val} fixed validation samples (seed {self.config.seed + 1}) of {where}")
            meta["metrics"] = metrics
        self.model.metadata = meta

    def exported_model(self) -> SamzooModel:
        """The model as a plain samzoo model (LoRA merged into the qkv weights)."""
        if not has_lora(self.model):
            return self.model
        return merge_lora(copy.deepcopy(self.model))

    def save(self, best: bool = False) -> None:
        self._stamp()
        exported = self.exported_model()
        save_checkpoint(exported, self.ckpt_dir / LATEST)
        state = {
            "iteration": self.iteration, "best_metric": self.best_metric,
            "stale_validations": self.stale_validations,
            "train_seconds": self.train_seconds,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "history": self.history,
        }
        if exported is not self.model:  # LoRA: keep the unmerged weights for an exact resume
            state["model_raw"] = self.model.state_dict()
        _atomic_torch_save(state, self.ckpt_dir / STATE)
        if best:  # the same bytes as latest: copy the file instead of serialising the weights again
            with atomic_path(self.ckpt_dir / BEST) as tmp:
                shutil.copyfile(self.ckpt_dir / LATEST, tmp)

    def _load_state(self) -> None:
        from ..state_files import read_state

        path = self.ckpt_dir / STATE
        try:
            state = read_state(path)
            int(state["iteration"]), float(state["best_metric"]), state["optimizer"], state["scheduler"]
        except (CheckpointError, KeyError, TypeError, ValueError) as err:
            detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise CheckpointError(f"cannot resume from {path}: {detail}; pass --restart to start the run over "
                                  "(or delete the file)") from None
        model_iter = self.model.metadata.get("training", {}).get("iteration")
        if model_iter is not None and model_iter != state["iteration"]:
            raise CheckpointError(f"{path} (iteration {state['iteration']}) does not belong to "
                                  f"{LATEST} (iteration {model_iter})")
        if "model_raw" in state:
            self.model.load_state_dict(state["model_raw"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_metric = float(state["best_metric"])
        self.stale_validations = int(state.get("stale_validations", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.history = list(state.get("history", []))

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict[str, float]) -> None:
        self.history.append(record)
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out / "logs"))
            except ImportError:  # pragma: no cover
                self._writer = False
        if self._writer:
            for k, v in record.items():
                if k != "iteration":
                    self._writer.add_scalar(k, v, record["iteration"])
            self._writer.flush()

    def write_curves(self) -> None:
        from .curves import plot_history

        (self.out / "history.json").write_text(json.dumps(self.history))
        plot_history(self.history, self.out / "curves.png")

    # ------------------------------------------------------------------ loop
    def fit(self, iterations: int | None = None) -> dict[str, float]:
        """Train until ``iterations`` (default: config.iterations) or ``max_minutes``."""
        from tqdm import tqdm

        cfg = self.config
        end = cfg.iterations if iterations is None else iterations
        start_time = time.time()
        running: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        main = self.rank == 0  # only rank 0 validates, logs and writes files
        bar = tqdm(total=end, initial=self.iteration, desc=cfg.name, disable=not (self.progress and main), unit="it")
        while self.iteration < end:
            t0 = time.time()
            stats = self.step()
            self.train_seconds += time.time() - t0
            for k, v in stats.items():
                running.setdefault(k, []).append(v)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.1e}")
            it = self.iteration
            if main and (it % cfg.log_every == 0 or it == end):
                last = {k: float(np.mean(v)) for k, v in running.items()}
                self._log({"iteration": it, "lr": self.optimizer.param_groups[0]["lr"],
                           "sec_per_it": self.train_seconds / max(it, 1), **last})
                running = {}
            timed_out = cfg.max_minutes is not None and time.time() - start_time > 60 * cfg.max_minutes
            timed_out = timed_out or (self.out / "STOP").exists()  # graceful stop on request
            timed_out = bool(broadcast_float(float(timed_out)))  # all ranks stop together
            is_best = stop_early = False
            if it % cfg.val_every == 0 or it == end or timed_out:
                val = self.validate() if main else {}
                if val:
                    self.last_validation, self.last_validation_iteration = val, it
                metric = broadcast_float(val.get("val_metric", 0.0))  # same lr schedule on all ranks
                self.scheduler.step(metric)
                is_best = metric < self.best_metric  # the metric is broadcast: every rank agrees
                if is_best:
                    self.best_metric, self.stale_validations = metric, 0
                else:
                    self.stale_validations += 1
                stop_early = cfg.early_stopping is not None and self.stale_validations >= cfg.early_stopping
                if main:
                    self._log({"iteration": it, **val})
                    bar.write(f"[{it}] " + " ".join(f"{k}={v:.4f}" for k, v in sorted(val.items())))
            if it % cfg.save_every == 0 or is_best or it == end or timed_out or stop_early:
                if main:
                    self.save(best=is_best)
                    self.write_curves()
                barrier()
            if timed_out:
                bar.write(f"stopping at iteration {it} (time limit or {self.out / 'STOP'})")
                break
            if stop_early:
                bar.write(f"early stopping at iteration {it}: val_metric has not improved on "
                          f"{self.best_metric:.4f} in {self.stale_validations} validations")
                break
        bar.close()
        if self._writer:
            self._writer.close()
            self._writer = None
        return last
