"""Unsupervised domain adaptation losses on pooled features: DANN, multi-kernel MMD (DAN) and Deep CORAL.

Each takes the features of a labelled source batch and of an unlabelled target batch and returns a loss
that is small when the two look alike to the model:

- DANN (Ganin and Lempitsky, ICML 2015; Ganin et al., JMLR 2016): a domain classifier learns to tell the
  domains apart behind a gradient-reversal layer, so the encoder learns to make them indistinguishable.
  The reversal's coefficient ramps from 0 to 1 with training progress ``p``: ``2 / (1 + exp(-10 p)) - 1``,
  the paper's schedule, so the random early features are not pushed around by a random domain head;
- MMD (Long et al., DAN, ICML 2015; Tzeng et al., deep domain confusion, 2014): the squared maximum mean
  discrepancy of the features under a sum of Gaussian kernels, with bandwidths ``2^k`` (k = -3..1) times
  the mean pairwise squared distance, as the Transfer-Learning-Library's DAN;
- CORAL (Sun and Saenko, ECCV 2016 workshops): the squared Frobenius distance between the two feature
  covariances, over ``4 d^2``.

The same ramp scales the MMD and CORAL terms: aligning features before they classify anything only
drags both domains toward whatever the random start gives.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

METHODS = ("dann", "mmd", "coral")
MMD_KERNEL_POWERS = (-3, -2, -1, 0, 1)  # bandwidths 2^k x the mean squared distance (TLlib's DAN default)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient flows back multiplied by ``-coeff`` (the gradient-reversal layer)."""
    return _ReverseGradient.apply(x, coeff)


def ramp(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule ``2 / (1 + exp(-gamma p)) - 1``: 0 at the start, about 1 from ``p`` = 0.5 on;
    ``gamma`` 0 means no ramp (always 1)."""
    if gamma == 0:
        return 1.0
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


class DomainClassifier(nn.Module):
    """Features -> logit of "this clip is from the target domain" (DANN's discriminator, CPU-sized)."""

    def __init__(self, feat_dim: int, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feat_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).squeeze(1)


def mmd(source: torch.Tensor, target: torch.Tensor, powers: tuple[int, ...] = MMD_KERNEL_POWERS) -> torch.Tensor:
    """Squared MMD (the biased V-statistic, so it is exactly 0 for identical batches) under the mean of
    Gaussian kernels ``exp(-d^2 / (2^k * mean d^2))``; batches may differ in size."""
    joint = torch.cat([source, target]).float()
    d2 = torch.cdist(joint, joint).pow(2)
    # the bandwidth is a statistic of the batch, not something to optimise: no gradient through it
    scale = d2.detach().sum() / max(1, len(joint) * (len(joint) - 1))
    kernel = sum(torch.exp(-d2 / (scale * 2.0**k).clamp_min(1e-12)) for k in powers) / len(powers)
    n = len(source)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: ``||cov(source) - cov(target)||_F^2 / (4 d^2)``."""
    if len(source) < 2 or len(target) < 2:
        raise ValueError(f"CORAL needs at least 2 clips per domain, got {len(source)} and {len(target)}")
    d = source.shape[1]
    diff = torch.cov(source.float().T) - torch.cov(target.float().T)
    return diff.pow(2).sum() / (4 * d * d)


class DomainAlignment(nn.Module):
    """One method's alignment loss between source and target features; DANN owns its domain classifier."""

    def __init__(self, method: str, feat_dim: int) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown adaptation method {method!r}; choices: none, {', '.join(METHODS)}")
        self.method = method
        self.domain_head = DomainClassifier(feat_dim) if method == "dann" else None

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, coeff: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to add to the task's (already scaled by ``coeff`` where the method scales its loss) and
        what to log about it."""
        if self.domain_head is None:
            raw = mmd(source, target) if self.method == "mmd" else coral(source, target)
            return coeff * raw, {"align_loss": float(raw.detach())}
        # DANN: the domain head always learns at full strength; the encoder gets its reversed gradient x coeff
        feats = reverse_gradient(torch.cat([source, target]).float(), coeff)
        logits = self.domain_head(feats)
        is_target = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(logits.device)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, is_target)
        accuracy = float(((logits.detach() > 0).float() == is_target).float().mean())
        return loss, {"align_loss": float(loss.detach()), "domain_accuracy": accuracy}
