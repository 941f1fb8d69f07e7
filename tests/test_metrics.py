"""Every metric equals scikit-learn's on the same predictions, including absent classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from vt_models.eval.metrics import classification_metrics


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 5
    y_true = rng.integers(0, k - 1, 40)  # class 4 never occurs
    probs = rng.dirichlet(np.ones(k), 40)
    probs[:, 2] *= 0.01  # class 2 (almost) never predicted
    probs /= probs.sum(1, keepdims=True)
    y_pred = probs.argmax(1)
    labels = list(range(k))
    m = classification_metrics(y_true, y_pred, k, probs, top_k=(1, 3))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        assert (m[f"{avg}_precision"], m[f"{avg}_recall"], m[f"{avg}_f1"]) == pytest.approx((p, r, f))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    assert m["per_class"]["precision"] == pytest.approx(p.tolist())
    assert m["per_class"]["recall"] == pytest.approx(r.tolist())
    assert m["per_class"]["f1"] == pytest.approx(f.tolist())
    assert m["per_class"]["support"] == s.tolist()
    assert m["mean_class_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert m["top1_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["top3_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y_true, probs, k=3, labels=labels))


def test_perfect_and_empty_edge_cases() -> None:
    m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 1]), 3)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == pytest.approx(
        skm.f1_score([0, 1, 1], [0, 1, 1], labels=[0, 1, 2], average="macro", zero_division=0)
    )
    empty = classification_metrics(np.array([], int), np.array([], int), 2)
    assert empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0
