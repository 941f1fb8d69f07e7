"""Label-free validation scores of a classifier on unlabelled (target) videos, higher is better.

Both follow pytorch-adapt's validators (``IMValidator``, ``SNDValidator``, version 0.0.83) on the
softmax predictions, written out here: the package pins ``torchmetrics==0.9.3`` and
``pytorch-metric-learning==1.6.3``, too old to sit beside this project's stack for a few lines.

- information maximisation (IM): the entropy of the mean prediction (diverse: every class gets
  predicted) minus the mean entropy of the predictions (confident); ``0`` for a model that predicts the
  same distribution everywhere, ``log K`` at best;
- soft neighbourhood density (SND; Saito et al., ICCV 2021): the mean entropy of each video's softmax
  over its cosine similarities to the other videos (temperature 0.05): high when predictions form dense
  neighbourhoods. It also rates a model that predicts the same for everything highly, so IM is the score
  that picks a model here, and SND is recorded beside it.

Neither has an absolute floor (no labels, no baseline to beat); :func:`predicted_class_diversity` is the
promotion gate's guard against a collapsed model when it decides label-free.
"""

from __future__ import annotations

import numpy as np
import torch

SND_TEMPERATURE = 0.05  # pytorch-adapt's default, the paper's


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p + torch.finfo(p.dtype).tiny)).sum(dim=-1)


def information_maximisation(probs: np.ndarray | torch.Tensor) -> float:
    """``H(mean p) - mean H(p)`` over the rows of ``probs`` (N, K)."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    return float(_entropy(p.mean(0)) - _entropy(p).mean())


def soft_neighbourhood_density(probs: np.ndarray | torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """Mean entropy of ``softmax(cos(p_i, p_j) / T)`` over ``j != i``; needs at least 2 rows."""
    p = torch.nn.functional.normalize(torch.as_tensor(probs, dtype=torch.float64), dim=1)
    n = len(p)
    if n < 2:
        raise ValueError(f"soft neighbourhood density needs at least 2 predictions, got {n}")
    sim = (p @ p.T)[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
    return float(_entropy(torch.softmax(sim / temperature, dim=1)).mean())


def predicted_class_diversity(probs: np.ndarray | torch.Tensor) -> float:
    """The entropy of the predicted (argmax) classes over the rows of ``probs`` (N, K), divided by ``log K``:
    0 when every row predicts the same class (a collapsed model), 1 when every class is predicted equally
    often. Unlike IM's diversity term it ignores how the probabilities spread, so a model that is unsure
    everywhere but always picks the same class is still collapsed."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    k = p.shape[1]
    counts = torch.bincount(p.argmax(dim=1), minlength=k).to(torch.float64)
    return float(_entropy(counts / counts.sum()) / np.log(k)) + 0.0 if k > 1 else 0.0  # + 0.0: never -0.0


def label_free_scores(probs: np.ndarray) -> dict[str, float]:
    """The scores logged for an adaptation run's target stream (``target_im`` picks the model)."""
    return {"im": information_maximisation(probs), "snd": soft_neighbourhood_density(probs)}
