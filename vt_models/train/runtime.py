"""Where and how a fit runs: device, memory format, mixed precision, seeding and exact RNG state."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from vt_models.config import LoopConfig
from vt_models.train import distributed as dist


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda", dist.local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available here: use device: auto or cpu")
    return device


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a classifier or detector to ``device`` in the memory format its convolutions run fastest in.

    Channels-last everywhere but 3D nets on a CPU, and detectors on a GPU (not measured there). Measured on
    2 CPU cores (training step, batch 16 x 8 frames x 64 px, flow): mini_resnet_tsm 43 -> 60 clips/s,
    mobilenet_v3_small_tsm 67 -> 138, resnet18_tsm 23 -> 25; fcos_mini_resnet_fpn, 4 frames of 128 x 171 px:
    186 -> 152 ms a step. Convolutions return channels-last outputs for it; results are the same.
    """
    family = getattr(model, "family", "")
    if family == "3d":
        return model.to(device, memory_format=torch.channels_last_3d) if device.type == "cuda" else model.to(device)
    if family in ("2d", "rnn") or (family == "detector" and device.type == "cpu"):
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles: Sapphire Rapids and later).

    Elsewhere oneDNN emulates bf16 with fp32 instructions and a bf16 step is slower than an fp32 one.
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def amp_dtype(cfg: LoopConfig, device: torch.device) -> torch.dtype | None:
    """The dtype training steps run in under autocast; None: fp32.

    CUDA: bf16 where supported, else fp16 with a grad scaler. CPU: ``auto`` is bf16 on a CPU with bf16 matrix
    units (measured on 2 cores of such a Xeon, one thread a training step: mini_resnet_tsm 770 -> 410 ms,
    fcos_mini_resnet_fpn 189 -> 100 with its group norms in fp32, models.detectors.Fp32GroupNorm) and fp32
    elsewhere; ``bf16`` forces it; ``fp16`` is fp32 (CPU fp16 is emulated). Scoring on a CPU stays fp32
    (:func:`eval_dtype`).
    """
    if cfg.amp == "off":
        return None
    if device.type == "cuda":
        if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if device.type == "cpu" and (cfg.amp == "bf16" or (cfg.amp == "auto" and cpu_has_bf16_units())):
        return torch.bfloat16
    return None


def eval_dtype(train_dtype: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The dtype validation, BatchNorm re-estimation and scoring run in: the training one on CUDA, fp32 on a CPU.

    On a CPU, bf16 would round a detector's scores to 3 significant digits (ties in the ranking that mAP reads)
    and make a checkpoint score differently from ``vt evaluate``, which runs in fp32; the forward passes there are
    a small part of a run's time.
    """
    return train_dtype if device.type == "cuda" else None


def precision(cfg: LoopConfig) -> str:
    """What this config's training steps run in on this machine (``bf16``, ``fp16`` or ``fp32``): an MLflow param
    and a checkpoint key, since ``amp: auto`` resolves differently from one machine to another."""
    return dtype_name(amp_dtype(cfg, resolve_device(cfg.device)))


def dtype_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")  # None (no autocast): fp32


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2] if random.getstate()[2] is not None else -1,
        "numpy": [int(x) for x in np.random.get_state()[1]],
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    pos = state["python_pos"]
    random.setstate((3, tuple(state["python"]), None if pos == -1 else pos))
    np.random.set_state(("MT19937", np.asarray(state["numpy"], np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
