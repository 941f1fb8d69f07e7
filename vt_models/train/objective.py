"""A step's loss when it needs the model's pooled features: domain alignment on an unlabelled target
batch (:mod:`vt_models.train.adapt`) and batch spectral shrinkage (:mod:`vt_models.train.regularise`).

The task computes its own loss and hands over the features (``task.loss_and_features``), from one
forward pass over the labelled and unlabelled clips together, as the Transfer-Learning-Library does:
BatchNorm then normalises both domains with the same statistics.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from vt_models.train.adapt import DomainAlignment, ramp
from vt_models.train.regularise import batch_spectral_shrinkage


class FeatureTask(Protocol):
    def loss_and_features(
        self, model: nn.Module, batch: Any, target: Any, device: torch.device
    ) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor | None]: ...


class FeatureObjective(nn.Module):
    """Task loss + ``adapt_weight * ramp(p) * alignment`` + ``bss * BSS(source features)``.

    ``adapt``: ``none`` or a method of :data:`vt_models.train.adapt.METHODS`; ``ramp_gamma``: the DANN
    schedule's steepness (0: the full weight from the first step). Its parameters (DANN's domain
    classifier) are trained by the loop's optimiser beside the model's.
    """

    def __init__(
        self,
        feat_dim: int,
        adapt: str = "none",
        adapt_weight: float = 1.0,
        ramp_gamma: float = 10.0,
        bss: float = 0.0,
        bss_k: int = 1,
    ) -> None:
        super().__init__()
        self.alignment = DomainAlignment(adapt, feat_dim) if adapt != "none" else None
        self.adapt_weight = adapt_weight
        self.ramp_gamma = ramp_gamma
        self.bss = bss
        self.bss_k = bss_k

    @property
    def needs_target(self) -> bool:
        return self.alignment is not None

    def forward(
        self, model: nn.Module, task: FeatureTask, batch: Any, target: Any, device: torch.device, progress: float
    ) -> tuple[torch.Tensor, int, dict[str, float]]:
        """The step's loss, its item count, and its parts for the logs. ``progress``: the fraction of
        training done (0 at the first step, 1 at the end)."""
        if not hasattr(task, "loss_and_features"):
            raise TypeError(
                f"{type(task).__name__} exposes no features (loss_and_features): domain adaptation and BSS "
                "work with the video classification task only"
            )
        if self.needs_target and target is None:
            raise ValueError("domain adaptation needs a batch of unlabelled target clips at every step")
        task_loss, n, source, target_feats = task.loss_and_features(
            model, batch, target if self.needs_target else None, device
        )
        loss = task_loss
        parts: dict[str, float] = {"task_loss": float(task_loss.detach())}
        if self.alignment is not None:
            coeff = ramp(progress, self.ramp_gamma)
            align, logged = self.alignment(source, target_feats, coeff)
            loss = loss + self.adapt_weight * align
            parts.update(logged, adapt_coeff=coeff)
        if self.bss:
            shrink = batch_spectral_shrinkage(source, self.bss_k)
            loss = loss + self.bss * shrink
            parts["bss"] = float(shrink.detach())
        return loss, n, parts
