"""Fine-tuning regularisers for small target sets: L2-SP and batch spectral shrinkage (BSS).

- L2-SP (Li, Grandvalet and Davoine, ICML 2018): ``alpha / 2 * ||w - w_start||^2`` over the pretrained
  encoder's weights: the pull goes toward the weights fine-tuning started from instead of toward zero,
  so those weights get no weight decay toward zero (:func:`vt_models.train.optim.param_groups`); the new
  head keeps its ordinary weight decay (the paper's ``beta`` term);
- BSS (Chen et al., NeurIPS 2019): ``eta * sum of the k smallest squared singular values`` of a batch's
  feature matrix. Fine-tuning on few examples lets the small spectral components, which carry what does
  not transfer, grow; the penalty shrinks them. The paper uses ``eta = 0.001``, ``k = 1``.
"""

from __future__ import annotations

import torch
from torch import nn


class StartingPoint:
    """L2-SP: the squared distance of the trainable weights under ``prefixes`` to their values when this
    object was made (the loaded weights, before any step)."""

    def __init__(self, model: nn.Module, prefixes: tuple[str, ...], alpha: float) -> None:
        if alpha <= 0:
            raise ValueError(f"l2sp must be > 0 to use a starting-point penalty, got {alpha}")
        self.alpha = alpha
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefixes)]
        if not named:
            raise ValueError(f"l2sp: no trainable parameters under {prefixes}: nothing to hold near its start")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        # on the parameters' device: make it after the model has moved there
        self.start = [p.detach().clone() for p in self.params]

    def _squared_distance(self) -> torch.Tensor:
        return sum((p.float() - s.float()).pow(2).sum() for p, s in zip(self.params, self.start, strict=True))

    def penalty(self) -> torch.Tensor:
        """``alpha / 2 * sum ||w - w_start||^2`` (a tensor with gradients toward the start)."""
        return 0.5 * self.alpha * self._squared_distance()

    def distance(self) -> float:
        """``||w - w_start||`` now, for the logs."""
        with torch.no_grad():
            return float(self._squared_distance()) ** 0.5


def batch_spectral_shrinkage(feats: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The sum of the ``k`` smallest squared singular values of the ``(batch, dim)`` feature matrix."""
    if k < 1:
        raise ValueError(f"bss_k must be >= 1, got {k}")
    singular = torch.linalg.svdvals(feats.float())  # descending
    return singular[-k:].pow(2).sum()
