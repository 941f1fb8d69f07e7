"""The promotion gate's absolute floor: a bootstrap confidence interval over test videos, and the
baseline a model must beat.

The video is the unit of resampling: the clips and frames of one video are not independent, so a
resample draws whole videos with replacement and recomputes the metric on them. The interval is
:func:`scipy.stats.bootstrap`'s percentile interval. BCa is not used: its jackknife acceleration is
undefined when the resampled metric is nearly constant (a model that predicts one class, a detector
that finds nothing), where scipy answers NaN, and those are the models the floor must reject.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vt_models.eval.metrics import classification_metrics


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval of a statistic over ``videos`` resampled videos."""

    low: float
    high: float
    confidence: float
    resamples: int
    videos: int


def video_bootstrap(
    statistic: Callable[[np.ndarray], float],
    videos: int,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile CI of ``statistic(video indices)``, drawing ``videos`` indices with replacement per resample.

    ``statistic`` gets a 1-D integer array of indices into the test videos (repeats allowed) and returns
    the metric on that multiset. The seed fixes the resamples. With one video every resample is that
    video: the interval is the point value.
    """
    from scipy.stats import bootstrap

    if videos < 1:
        raise ValueError("no test video: nothing to resample")
    if videos == 1:
        value = float(statistic(np.zeros(1, np.int64)))
        return Interval(value, value, confidence, resamples, videos)
    res = bootstrap(
        (np.arange(videos),),
        lambda idx: float(statistic(np.asarray(idx, np.int64))),
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(float(ci.low), float(ci.high), confidence, resamples, videos)


def classification_statistic(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, metric: str
) -> Callable[[np.ndarray], float]:
    """``statistic(videos)``: the registry metric (e.g. ``macro_f1``) of the per-video predictions of those videos."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)

    def statistic(videos: np.ndarray) -> float:
        return float(classification_metrics(y_true[videos], y_pred[videos], num_classes)[metric])

    return statistic


def paired_difference(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    num_classes: int,
    metric: str,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile CI of ``metric(a) - metric(b)``, two models' per-video predictions of the same videos resampled
    together (paired): the spread of their difference, which two intervals side by side overstate, since both
    models find the same videos hard."""
    a = classification_statistic(y_true, pred_a, num_classes, metric)
    b = classification_statistic(y_true, pred_b, num_classes, metric)
    return video_bootstrap(
        lambda videos: a(videos) - b(videos), len(y_true), resamples=resamples, confidence=confidence, seed=seed
    )


def majority_class(labels: Sequence[int], num_classes: int) -> int:
    """The most frequent label (ties: the first class in class order)."""
    if not len(labels):
        raise ValueError("no labels to take the majority of")
    return int(np.argmax(np.bincount(np.asarray(labels, np.int64), minlength=num_classes)))


def majority_baseline(y_true: np.ndarray, majority: int, num_classes: int, metric: str) -> float:
    """``metric`` of a predictor that answers ``majority`` for every video (same metric function as the model's).

    For macro-F1 that is the F1 of the majority class divided by the number of classes.
    """
    y_true = np.asarray(y_true, np.int64)
    return float(classification_metrics(y_true, np.full_like(y_true, majority), num_classes)[metric])
