"""Multi-GPU / multi-node through ``torchrun``: everything is a no-op in a single process.

``torchrun --nproc_per_node=N -m vt_models train ...`` sets RANK/WORLD_SIZE; we join the group
(NCCL on CUDA, gloo on CPU), shard data with DistributedSampler, reduce metrics across ranks,
and only rank 0 writes checkpoints, metrics and MLflow runs.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as td
from torch import nn


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_distributed() else 0


def world_size() -> int:
    return td.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group when launched by torchrun; return whether we are distributed."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    td.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    if is_distributed():
        td.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier() -> None:
    if is_distributed():
        td.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return t
    # gloo reduces CPU tensors; NCCL needs them on the GPU
    dev = torch.device("cuda", local_rank()) if td.get_backend() == "nccl" else torch.device("cpu")
    t = t.to(dev)
    td.all_reduce(t)
    return t.cpu()


def gather_outputs(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate every rank's predictions (each rank evaluated a disjoint shard)."""
    if not is_distributed():
        return outputs
    parts: list[Any] = [None] * world_size()
    td.all_gather_object(parts, outputs)
    return {k: np.concatenate([p[k] for p in parts]) for k in outputs}


def shard(n: int) -> list[int]:
    """This rank's indices of ``range(n)`` for evaluation: disjoint, no padding duplicates."""
    return list(range(rank(), n, world_size()))
