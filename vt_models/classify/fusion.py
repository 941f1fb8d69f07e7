"""Two-stream late fusion: a weighted average of the class probabilities of evaluated models.

Two-stream networks (Simonyan and Zisserman 2014; TSN) train an RGB and a flow model apart and
average their scores per video; MMAction2 does it after testing, from the score files
(``tools/analysis_tools/report_accuracy.py --preds rgb.pkl flow.pkl --coefficients 1 1.5``). Here the
score files are the ``predictions.csv`` that ``vt evaluate`` writes (video-level probabilities, the
average of its views), so fusing needs no model in memory and any modalities or backbones combine.
Each stream must have scored the same videos with the same classes, or fusing is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vt_models.classify.predictions import prediction_columns, prediction_rows
from vt_models.eval.bootstrap import classification_statistic, video_bootstrap
from vt_models.eval.metrics import classification_metrics
from vt_models.io.files import read_csv, write_csv, write_json


@dataclass(frozen=True)
class StreamScores:
    """One evaluated model's video-level probabilities, rows in ``videos`` order."""

    name: str
    videos: list[str]
    classes: list[str]
    labels: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, K)


def read_scores(eval_dir: Path | str) -> StreamScores:
    """The ``predictions.csv`` of a ``vt evaluate`` output folder."""
    path = Path(eval_dir) / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `vt evaluate` for that model first")
    rows = read_csv(path)
    if not rows:
        raise ValueError(f"{path} has no videos")
    classes = [c[len("prob_") :] for c in rows[0] if c.startswith("prob_")]
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r["true_label"] for r in rows} - set(index))
    if unknown:
        raise ValueError(f"{path}: true labels {unknown} have no prob_ column")
    probs = np.asarray([[float(r[f"prob_{c}"]) for c in classes] for r in rows], np.float64)
    labels = np.asarray([index[r["true_label"]] for r in rows], np.int64)
    return StreamScores(Path(eval_dir).name, [r["video"] for r in rows], classes, labels, probs)


def fuse(streams: Sequence[StreamScores], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of the streams' probabilities (weights normalised to sum 1)."""
    if len(streams) < 2:
        raise ValueError("late fusion needs at least two evaluated models")
    w = np.ones(len(streams)) if weights is None else np.asarray(weights, np.float64)
    if len(w) != len(streams) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per stream ({len(streams)}), not all zero; got {list(w)}")
    first = streams[0]
    for s in streams[1:]:
        if s.classes != first.classes:
            raise ValueError(
                f"{s.name} scores classes {s.classes}, {first.name} {first.classes}: fuse models of one task"
            )
        if s.videos != first.videos:
            raise ValueError(f"{s.name} and {first.name} scored different videos: evaluate both on the same split")
    w = w / w.sum()
    return sum(wi * s.probs for wi, s in zip(w, streams, strict=True))


def fusion_report(
    eval_dirs: Sequence[Path | str],
    out_dir: Path,
    weights: Sequence[float] | None = None,
    *,
    metric: str = "macro_f1",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Score every stream and their late fusion on the same videos, each with a bootstrap CI of ``metric``;
    write ``metrics.json`` (the fusion's metrics plus a ``streams`` table) and ``predictions.csv``."""
    streams = [read_scores(d) for d in eval_dirs]
    fused = fuse(streams, weights)
    first, k = streams[0], len(streams[0].classes)
    rows = []
    for name, probs in [*((s.name, s.probs) for s in streams), ("late_fusion", fused)]:
        pred = probs.argmax(1)
        m = classification_metrics(first.labels, pred, k)
        ci = video_bootstrap(
            classification_statistic(first.labels, pred, k, metric),
            len(pred),
            resamples=resamples,
            confidence=confidence,
            seed=seed,
        )
        rows.append({"model": name, "accuracy": m["accuracy"], metric: m[metric], "ci_low": ci.low, "ci_high": ci.high})
    metrics = {key: v for key, v in m.items() if isinstance(v, float)}  # the last row: the fusion's
    metrics.update(
        {
            "videos": len(first.videos),
            "weights": list(weights) if weights is not None else [1.0] * len(streams),
            "streams": rows,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    write_csv(
        out_dir / "predictions.csv",
        prediction_rows(first.videos, first.classes, first.labels, fused),
        prediction_columns(first.classes),
    )
    return metrics
