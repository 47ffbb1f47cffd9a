"""The training loop every family can use: optimiser, schedule, logging, checkpoints and resume,
early stopping, data-parallel runs (torchrun) and mixed precision. It knows no family: what is
trained and how (the model, its batches, its loss, its validation) comes from a
:class:`TrainingObjective` that a family brings (μSAM: ``FamilySpec.train`` ->
``samzoo.families.microsam.training``).

Adam (or the objective's ``optimizer``) + ReduceLROnPlateau on the validation metric, optional
linear warm-up; ``best`` and ``latest``
checkpoints are written by the objective (the family's checkpoint format, atomic); the
optimizer/scheduler/iteration state lives in a separate file read with ``weights_only=True``;
resume restores all of it, and because every batch is a pure function of ``(seed, iteration)``
(the objective's promise), a resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import CheckpointError, InputError
from ..io import atomic_path
from .config import save_config
from .distributed import broadcast_float, barrier, distributed_context, local_rank
from .provenance import validation_metrics

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


class TrainingObjective(Protocol):
    """What a family gives the loop. ``config`` (the family's config object) must also carry the
    loop's settings: ``name, out_dir, iterations, lr, warmup_iterations, weight_decay,
    lr_patience, lr_factor, early_stopping, grad_clip, device, mixed_precision, seed, threads,
    val_every, save_every, log_every, max_minutes`` and ``to_dict()``; optionally ``ema_decay``."""

    config: Any

    def initial_model(self) -> torch.nn.Module:
        """The model a fresh run starts from (built, or loaded from the config's init checkpoint)."""

    def load_model(self, path: Path) -> torch.nn.Module:
        """A model saved by ``save_model`` (resume)."""

    def save_model(self, model: torch.nn.Module, path: Path) -> None:
        """Write ``model`` as the family's checkpoint (atomically)."""

    def prepare(self, model: torch.nn.Module) -> None:
        """Before the optimiser is built: check the model fits the objective, freeze parts, add adapters."""

    def loss_module(self, model: torch.nn.Module, device: torch.device, rank: int) -> torch.nn.Module:
        """``forward(batch, step) -> (loss, stats)``; may offer ``backward_staged(batch, step, scale)
        -> stats`` (same gradients, less memory; used outside DDP)."""

    def batch(self, iteration: int, rank: int) -> Any:
        """The batch of ``iteration`` for this rank: a pure function of ``(seed, iteration, rank)``."""

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Validation numbers (``val_*``), including ``val_metric`` (lower is better); no gradients."""

    def validation_data(self) -> tuple[int, str]:
        """How many samples ``validate`` measures on, and what they are in words (recorded in the
        checkpoint's metrics)."""

    def exported(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as it is saved (e.g. adapters merged); ``model`` itself when nothing changes."""

    # optional: optimizer(params) -> torch.optim.Optimizer (default: Adam with config.lr and
    # config.weight_decay); the lr schedule (warm-up, reductions on plateaus) stays the loop's.


class TrainingLoop:
    """Runs a :class:`TrainingObjective`: ``fit()`` until the configured iterations, time limit,
    ``STOP`` file or early stop; ``step()`` one optimiser step."""

    def __init__(self, objective: TrainingObjective, *, resume: bool = True, progress: bool = True):
        config = objective.config
        self.objective = objective
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
        self.model = objective.load_model(latest) if resuming else objective.initial_model()
        self.rank, self.world_size = distributed_context()
        self.device = resolve_device(config.device)
        objective.prepare(self.model)
        self.model.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        make_optimizer = getattr(objective, "optimizer", None)  # the family's recipe; default Adam
        self.optimizer = (make_optimizer(self.params) if make_optimizer is not None
                          else torch.optim.Adam(self.params, lr=config.lr, weight_decay=config.weight_decay))
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience)
        # float16 needs loss scaling; bfloat16 (CPU) and float32 do not (then it is a no-op)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.mixed_precision and self.device.type == "cuda")
        self.ema = self._averaged_model(getattr(config, "ema_decay", None))
        if resuming:
            self._load_state()
        self.loss_module = objective.loss_module(self.model, self.device, self.rank)
        if self.world_size > 1:  # torchrun: gradients averaged over ranks, each rank its own batch
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids, find_unused_parameters=True)
        self._writer = None

    def _averaged_model(self, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
        """An exponential moving average of the weights (torch's ``AveragedModel``), or None.

        Why: with batch-1 CPU runs the weights swing between checkpoints (μSAM LM run: val-split mSA
        0.452 and 0.291 with 175 iterations between); the average over the last ~1/(1-decay) steps
        is what gets validated and saved (``best``/``latest``), the raw weights keep training."""
        if not decay:
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def saved_model(self) -> torch.nn.Module:
        """The weights that are validated and saved: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------ one step
    def step(self, batch: Any = None) -> dict[str, float]:
        """One optimizer step on ``batch`` (default: the batch of the current iteration).

        One process uses the loss module's ``backward_staged`` when it has one (less memory); under
        DDP the loss has one backward, as DDP's gradient hooks require."""
        self.model.train()
        if batch is None:
            batch = self.objective.batch(self.iteration, self.rank)
        warmup = self.config.warmup_iterations
        if self.iteration < warmup:  # depends on the iteration only, so resume reproduces it
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr * (self.iteration + 1) / warmup
        self.optimizer.zero_grad(set_to_none=True)
        if self.world_size > 1 or not hasattr(self.loss_module, "backward_staged"):
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
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        self.iteration += 1
        return stats

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.saved_model.eval()
        return self.objective.validate(self.saved_model, self.device)

    # ------------------------------------------------------------------ checkpoints
    def _stamp(self) -> None:
        meta = dict(self.model.metadata)
        meta["training"] = {"config": self.config.to_dict(), "iteration": self.iteration,
                            "train_seconds": round(self.train_seconds, 1)}
        if self.last_validation:
            metrics = dict(meta.get("metrics") or {})
            n_images, where = self.objective.validation_data()
            metrics["validation"] = validation_metrics(
                self.last_validation, iteration=self.last_validation_iteration, n_images=n_images, data=where)
            meta["metrics"] = metrics
        self.model.metadata = meta
        self.saved_model.metadata = meta

    def exported_model(self) -> torch.nn.Module:
        """The model as it is saved (the objective's ``exported``: e.g. LoRA merged; the moving
        average of the weights when ``ema_decay`` is set)."""
        return self.objective.exported(self.saved_model)

    def save(self, best: bool = False) -> None:
        self._stamp()
        exported = self.exported_model()
        self.objective.save_model(exported, self.ckpt_dir / LATEST)
        state = {
            "iteration": self.iteration, "best_metric": self.best_metric,
            "stale_validations": self.stale_validations,
            "train_seconds": self.train_seconds,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "history": self.history,
        }
        if exported is not self.model:  # LoRA or EMA: keep the raw weights for an exact resume
            state["model_raw"] = self.model.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
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
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(f"{path} has no moving average of the weights (the run had no ema_decay); "
                                      "pass --restart or remove ema_decay")
            self.ema.load_state_dict(state["ema"])
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
