"""Data-parallel training under ``torchrun`` (gloo on CPU, nccl on GPUs).

``torchrun --nproc_per_node N -m samzoo.training.cli train CONFIG.yaml``: every rank draws its own
batch (samples ``rank * batch_size ...`` of each step), ``DistributedDataParallel`` averages the
gradients, rank 0 validates, logs and writes checkpoints, and the values that steer the loop (the
validation metric for the lr schedule, the time limit) are broadcast from rank 0 so all ranks stay
in step. Without ``torchrun`` (WORLD_SIZE unset or 1) every helper here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``; initialises the process group when launched by torchrun (each
    rank on its own GPU, ``LOCAL_RANK``, when there are GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _collective_device() -> torch.device:
    """nccl only moves CUDA tensors, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_float(value: float, src: int = 0) -> float:
    if not _active():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.broadcast(t, src)
    return float(t.item())


def barrier() -> None:
    if _active():
        dist.barrier()
