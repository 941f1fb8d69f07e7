"""Classification metrics from predictions, defined exactly as scikit-learn defines them.

Precision/recall/F1 use ``zero_division=0``; macro averages run over *all* classes of the
data set (``labels=range(num_classes)``), so a class that never occurs or is never predicted
counts as 0 instead of silently vanishing from the average.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of videos of true class i predicted as j."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den != 0)


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    probs: np.ndarray | None = None,
    top_k: tuple[int, ...] = (1,),
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 per class, macro and weighted, mean class accuracy, top-k."""
    y_true = np.asarray(y_true, np.int64)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    n = max(1, int(support.sum()))
    weights = support / n
    out: dict[str, Any] = {
        "accuracy": float(tp.sum() / n),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        # sklearn's balanced_accuracy: mean recall over the classes that occur
        "mean_class_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.astype(int).tolist(),
        },
        "confusion_matrix": cm.tolist(),
    }
    if probs is not None:
        ranked = np.argsort(-np.asarray(probs), axis=1, kind="stable")
        for k in top_k:
            out[f"top{k}_accuracy"] = (
                float((ranked[:, :k] == y_true[:, None]).any(axis=1).mean()) if len(y_true) else 0.0
            )
    return out


@dataclass
class EvalReport:
    """What an evaluation wrote (``out_dir``), its metrics and the class names, for classifiers and detectors."""

    out_dir: Path
    metrics: dict[str, Any]
    classes: list[str]

    @property
    def macro_f1(self) -> float:
        return float(self.metrics["macro_f1"])
