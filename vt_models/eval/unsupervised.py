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

Deep embedded validation (DEV; You et al., ICML 2019; pytorch-adapt's ``DeepEmbeddedValidator``) is a risk,
lower is better: the labelled *source* validation videos' losses, importance-weighted by how target-like each
video's features are (a domain classifier's density ratio), with the paper's control variate. Unlike IM it
reads the source labels a model was trained against. The domain classifier is a logistic regression on
standardised features whose regularisation is cross-validated (the reference sweeps an MLP's weight decay
and keeps the most accurate on a held-out fifth): with a few hundred videos and 128 features that MLP
overfitted and its risk flipped between models with the split's random state. The adaptation report
records DEV beside IM; IM picks: DEV's pick was within 0.05 of the best at 4 seeds of 8, IM's at 7 (README).
"""

from __future__ import annotations

from typing import Any

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
    """The scores logged for an adaptation run's target stream (``target_im`` picks the model). SND only from
    two predictions on: one video has no neighbours (and its IM is 0 whatever the model)."""
    scores = {"im": information_maximisation(probs)}
    if len(probs) >= 2:
        scores["snd"] = soft_neighbourhood_density(probs)
    return scores


DEV_CS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # inverse regularisation strengths tried, by 5-fold CV


def domain_density_ratio(source: np.ndarray, target: np.ndarray, query: np.ndarray, seed: int = 0) -> np.ndarray:
    """``p_target(x) / p_source(x)`` at the rows of ``query`` (N, D), from a domain classifier fitted to the
    ``source`` and ``target`` feature rows: its odds of "target", times ``len(source) / len(target)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if min(len(source), len(target)) < 5:
        raise ValueError(f"DEV needs at least 5 source and 5 target videos, got {len(source)} and {len(target)}")
    x = np.concatenate([source, target]).astype(np.float64)
    y = np.r_[np.zeros(len(source)), np.ones(len(target))].astype(np.int64)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)

    def classifier(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    # the reference's sweep: the regularisation whose domain classifier is most accurate on held-out videos
    best = max(DEV_CS, key=lambda c: cross_val_score(classifier(c), x, y, cv=folds, scoring="accuracy").mean())
    p_target = classifier(best).fit(x, y).predict_proba(np.asarray(query, np.float64))[:, 1]
    p_target = np.clip(p_target, 1e-6, 1 - 1e-6)
    return p_target / (1 - p_target) * len(source) / len(target)


def dev_risk(weights: np.ndarray, losses: np.ndarray) -> float:
    """The DEV risk of per-video ``losses`` under importance ``weights``: ``mean(w l) + eta mean(w) - eta``
    with ``eta = -cov(w l, w) / var(w)`` (the control variate; unbiased, lower variance than ``mean(w l)``)."""
    w, loss = np.asarray(weights, np.float64), np.asarray(losses, np.float64)
    if w.shape != loss.shape or len(w) < 2:
        raise ValueError(f"DEV needs one weight per loss, at least 2: got {w.shape} and {loss.shape}")
    weighted = w * loss
    var = np.var(w, ddof=1)
    eta = -np.cov(weighted, w)[0, 1] / var if var > 0 else 0.0
    return float(weighted.mean() + eta * w.mean() - eta)


def deep_embedded_validation(
    source_train: np.ndarray,
    source_val: np.ndarray,
    source_val_losses: np.ndarray,
    target: np.ndarray,
    seed: int = 0,
) -> float:
    """DEV risk (lower is better) of a model from its pooled features: of the source's training videos and
    validation videos (with their losses under the model) and of the unlabelled target videos."""
    return dev_risk(domain_density_ratio(source_train, target, source_val, seed), source_val_losses)
