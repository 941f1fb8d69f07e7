"""Fine-tuning strategies: which parameters train.

- ``linear_probe``: the pretrained encoder is frozen; only the new head (and the RNN of a
  CNN+RNN model, which is new) trains;
- ``partial``: the last ``unfreeze_stages`` encoder stages train too;
- ``full``: everything trains (usually with ``backbone_lr_mult`` < 1: discriminative LR).
``freeze_bn`` additionally fixes every BatchNorm layer (statistics and affine parameters).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vt_models.models.network import VideoClassifier


def apply_strategy(
    model: VideoClassifier, strategy: str, unfreeze_stages: int = 2, freeze_bn: bool = False
) -> dict[str, Any]:
    stages = model.stages()
    if strategy not in ("linear_probe", "partial", "full"):
        raise ValueError(f"unknown strategy {strategy!r}; choices: linear_probe, partial, full")
    if strategy == "partial" and not 1 <= unfreeze_stages <= len(stages):
        raise ValueError(
            f"train.unfreeze_stages={unfreeze_stages}, but this backbone has {len(stages)} stages (1..{len(stages)})"
        )
    for p in model.encoder.parameters():
        p.requires_grad = strategy == "full"
    if strategy == "partial":
        for stage in stages[-unfreeze_stages:]:
            for p in stage.parameters():
                p.requires_grad = True
    for module in (model.head, model.temporal):
        if module is not None:
            for p in module.parameters():
                p.requires_grad = True
    if freeze_bn:
        for m in model.encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad = False
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "strategy": strategy,
        "stages": len(stages),
        "trainable_stages": {"linear_probe": 0, "partial": unfreeze_stages, "full": len(stages)}[strategy],
        "params_total": total,
        "params_trainable": trainable,
    }
