"""BatchNorm statistics during fine-tuning: frozen layers, head-only epochs (LP-FT) and precise BN / AdaBN."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from vt_models.train.optim import encoder_prefixes


def hold_encoder(model: nn.Module) -> list[nn.Parameter]:
    """For a head-only epoch (LP-FT): put the encoder's BatchNorm layers in eval mode and return its
    trainable parameters, whose gradients the loop drops before each step."""
    prefixes = encoder_prefixes(model)
    for name, m in model.named_modules():
        if f"{name}.".startswith(prefixes) and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return [p for name, p in model.named_parameters() if p.requires_grad and name.startswith(prefixes)]


def _frozen(m: nn.Module) -> bool:
    """A BatchNorm layer with no trainable parameter: training keeps it in eval mode."""
    return not any(p.requires_grad for p in m.parameters())


def freeze_norm_stats(model: nn.Module, all_bn: bool) -> None:
    """Put BatchNorm layers in eval mode when frozen, so running statistics stay fixed too."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (all_bn or _frozen(m)):
            m.eval()


def norm_held(model: nn.Module, head_epochs: int) -> bool:
    """Whether some BatchNorm layer starts training in eval mode: frozen (see :func:`freeze_norm_stats`) or
    held for LP-FT's head-only epochs (:func:`hold_encoder`)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return bool(norms) and (head_epochs > 0 or any(_frozen(m) for m in norms))


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    task: Any,
    loader: Iterable[Any],
    device: torch.device,
    batches: int,
    dtype: torch.dtype | None = None,
    labelled: bool = True,
) -> int:
    """Re-estimate every BatchNorm layer's running statistics on ``batches`` training batches (precise BN;
    on a new domain, AdaBN). No weight changes. Returns the number of batches used.

    Fine-tuning makes few optimizer steps on small data, so the exponential running averages still hold
    mostly source-domain statistics when the model is scored or saved; a plain average over current
    training batches (momentum None) replaces them. ``labelled`` False: the batches have no labels (a
    target stream), so the forward passes go through ``task.predict`` instead of ``task.loss``.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or batches <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    was_training = model.training
    model.train()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    ctx = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    forward = task.loss if labelled else task.predict
    used = 0
    try:
        for batch in loader:
            if used >= batches:
                break
            with ctx:
                forward(model, batch, device)
            used += 1
    finally:
        for m, momentum, (mean, var, count) in zip(bns, momenta, saved, strict=True):
            m.momentum = momentum
            if used == 0:  # nothing seen: keep the old statistics
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.train(was_training)
    return used
