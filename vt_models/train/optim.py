"""Optimiser and schedule: discriminative LR for the pretrained encoder, warmup then cosine."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vt_models.config import LoopConfig


def encoder_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the pretrained encoder (default ``encoder.``; detectors: their backbone)."""
    return tuple(getattr(model, "encoder_prefixes", ("encoder.",)))


def param_groups(model: nn.Module, cfg: LoopConfig, extra: nn.Module | None = None) -> list[dict[str, Any]]:
    """Encoder at ``lr * backbone_lr_mult``, the rest at ``lr``; no weight decay on norms and biases, nor on
    the encoder under L2-SP (``l2sp``), which pulls it toward its start instead of toward zero.

    The encoder is what ``model.encoder_prefixes`` names (default ``encoder.``; detectors: their backbone).
    ``extra``: a training-only module beside the model (a domain classifier), in a group of its own at ``lr``.
    """
    prefixes = encoder_prefixes(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        encoder = name.startswith(prefixes)
        no_decay = p.ndim <= 1
        groups.setdefault((encoder, no_decay), []).append(p)
    out = []
    for (encoder, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": cfg.lr * (cfg.backbone_lr_mult if encoder else 1.0),
                "weight_decay": 0.0 if no_decay or (encoder and cfg.l2sp) else cfg.weight_decay,
                "name": f"{'encoder' if encoder else 'head'}{'_no_decay' if no_decay else ''}",
            }
        )
    if not out:
        raise ValueError("no trainable parameters: check train.strategy / freeze settings")
    extra_params = [p for p in extra.parameters() if p.requires_grad] if extra is not None else []
    if extra_params:
        out.append({"params": extra_params, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "extra"})
    return out


def build_optimizer(model: nn.Module, cfg: LoopConfig, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, extra)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    # The fused kernel updates every tensor in one pass: 4x faster than the per-tensor loop on a CPU
    # (30 against 124 ms a step for a 19M-parameter detector), the same update.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """LR factor: linear warmup from ``floor`` to 1, then cosine down to ``floor``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return floor + (1 - floor) * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
