"""Multi-GPU / multi-node through ``torchrun``: everything is a no-op in a single process.

``torchrun --nproc_per_node=N -m vt_models train ...`` sets RANK/WORLD_SIZE; we join the group
(NCCL on CUDA, gloo on CPU), shard data with DistributedSampler, reduce metrics across ranks,
and only rank 0 writes checkpoints, metrics and MLflow runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as td
from torch import nn

log = logging.getLogger(__name__)


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


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors in name order: equal digests mean equal weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_in_sync(model: nn.Module) -> str:
    """Every rank's digest of the trainable weights (parameters), compared across ranks: DDP must end with
    identical parameters on all of them (a diverged rank would otherwise go unnoticed, since only rank 0
    saves). Buffers are left out: BatchNorm statistics recalibrated on each rank's own shard may differ, and
    rank 0's are the ones saved. Returns this rank's digest."""
    digest = weights_digest(dict(model.named_parameters()))
    if not is_distributed():
        return digest
    digests: list[Any] = [None] * world_size()
    td.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        ranks = ", ".join(f"rank {r}: {d[:16]}" for r, d in enumerate(digests))
        raise RuntimeError(
            f"DDP ranks ended with different weights ({ranks}): check that every rank runs the same code, "
            "data and config, and report it as a bug if they do"
        )
    log.info("rank %d of %d: weights sha256 %s, the same on every rank", rank(), world_size(), digest)
    return digest
