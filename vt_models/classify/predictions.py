"""The per-video ``predictions.csv`` that ``vt evaluate`` and ``vt report fusion`` write: one layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def prediction_columns(classes: Sequence[str]) -> list[str]:
    return ["video", "true_label", "pred_label", *(f"prob_{c}" for c in classes)]


def prediction_rows(
    videos: Sequence[str], classes: Sequence[str], labels: np.ndarray, probs: np.ndarray
) -> list[dict[str, Any]]:
    """One row per video: its true and predicted label and every class probability."""
    return [
        {
            "video": v,
            "true_label": classes[int(y)],
            "pred_label": classes[int(p.argmax())],
            **{f"prob_{c}": f"{x:.6f}" for c, x in zip(classes, p, strict=True)},
        }
        for v, y, p in zip(videos, labels, probs, strict=True)
    ]
