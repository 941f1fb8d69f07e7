"""Multi-object tracking metrics: thin adapters over py-motmetrics (CLEAR-MOT, IDF1) and TrackEval (HOTA).

Per frame, GT and predicted boxes (xyxy) are compared by IoU, once, with our
:func:`vt_models.boxes.iou_matrix` (motmetrics 1.4's ``iou_matrix`` calls ``np.asfarray``, which
numpy 2 removed); both libraries get the same IoUs.

* motmetrics: a pair can match when IoU >= ``iou_threshold`` (its distance ``1 - IoU`` with
  ``max_iou = 1 - iou_threshold``). The frame-by-frame matching (kept correspondences, then
  maximum-cardinality minimum-cost matching, ID switches), IDF1's global assignment and pooling
  over videos are motmetrics' own ``MOTAccumulator`` and ``compute_many``.
* TrackEval (the reference implementation of HOTA, by its authors): the IoU is HOTA's similarity,
  scored at its own thresholds alpha = 0.05..0.95 (``iou_threshold`` does not apply). HOTA, DetA and
  AssA are TrackEval's ``HOTA.eval_sequence`` per video and ``combine_sequences`` over videos, each
  the mean over the alphas as TrackEval reports them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vt_models.boxes import iou_matrix

if TYPE_CHECKING:
    from vt_models.track.tracker import TrackedBox

FrameBoxes = tuple[np.ndarray, np.ndarray]  # (ids (K,), boxes (K, 4) xyxy)

# our name -> motmetrics' metric name
NAMES = {
    "mota": "mota",
    "motp": "motp",  # mean 1 - IoU over matched pairs (lower is better)
    "idf1": "idf1",
    "idp": "idp",
    "idr": "idr",
    "precision": "precision",
    "recall": "recall",
    "id_switches": "num_switches",
    "fragmentations": "num_fragmentations",
    "false_positives": "num_false_positives",
    "misses": "num_misses",
    "num_matches": "num_detections",  # matched pairs, ID switches included
    "num_gt": "num_objects",
    "num_pred": "num_predictions",
    "num_gt_tracks": "num_unique_objects",
    "mostly_tracked": "mostly_tracked",
    "partially_tracked": "partially_tracked",
    "mostly_lost": "mostly_lost",
}
# our name -> TrackEval's HOTA field (an array over its alphas; reported as their mean)
HOTA_NAMES = {"hota": "HOTA", "deta": "DetA", "assa": "AssA"}


@dataclass(frozen=True)
class Sequence:
    """One sequence (video) scored by both libraries, ready to be pooled by :func:`summarise`."""

    motmetrics: Any  # motmetrics.MOTAccumulator
    hota: dict[str, Any]  # TrackEval's HOTA.eval_sequence result


def tracks_to_frames(tracked: list[list[TrackedBox]]) -> list[FrameBoxes]:
    """Tracker output (predicted boxes included) -> per-frame ``(ids, boxes)`` for ``mot_metrics``."""
    return [
        (np.array([t.track_id for t in frame], np.int64), np.array([t.box for t in frame], np.float64).reshape(-1, 4))
        for frame in tracked
    ]


def _dense_ids(ids: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Ids relabelled 0..n-1 over the sequence, as TrackEval's datasets hand them to its metrics."""
    unique = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
    return [np.searchsorted(unique, i) for i in ids], len(unique)


def accumulate(gt: list[FrameBoxes], pred: list[FrameBoxes], iou_threshold: float = 0.5) -> Sequence:
    """One sequence (video): a motmetrics ``MOTAccumulator`` and TrackEval's HOTA of it."""
    import motmetrics as mm
    from trackeval.metrics import HOTA

    if len(gt) != len(pred):
        raise ValueError(f"gt has {len(gt)} frames, pred has {len(pred)}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    acc = mm.MOTAccumulator(auto_id=True)
    gt_ids, pred_ids, similarity = [], [], []
    for (g_ids, g_boxes), (p_ids, p_boxes) in zip(gt, pred, strict=True):
        g_ids, p_ids = np.asarray(g_ids, np.int64).reshape(-1), np.asarray(p_ids, np.int64).reshape(-1)
        g_boxes = np.asarray(g_boxes, np.float64).reshape(-1, 4)
        p_boxes = np.asarray(p_boxes, np.float64).reshape(-1, 4)
        if len(g_ids) != len(g_boxes) or len(p_ids) != len(p_boxes):
            raise ValueError("ids and boxes differ in length")
        if len(np.unique(g_ids)) != len(g_ids) or len(np.unique(p_ids)) != len(p_ids):
            raise ValueError("an id occurs twice in one frame")
        iou = iou_matrix(g_boxes, p_boxes)
        dist = 1.0 - iou
        dist[dist > 1.0 - iou_threshold] = np.nan  # motmetrics: NaN = may not match
        acc.update(g_ids.tolist(), p_ids.tolist(), dist)
        gt_ids.append(g_ids), pred_ids.append(p_ids), similarity.append(iou)
    (gt_dense, num_gt_ids), (pred_dense, num_pred_ids) = _dense_ids(gt_ids), _dense_ids(pred_ids)
    hota = HOTA().eval_sequence(
        {
            "gt_ids": gt_dense,
            "tracker_ids": pred_dense,
            "similarity_scores": similarity,
            "num_gt_ids": num_gt_ids,
            "num_tracker_ids": num_pred_ids,
            "num_gt_dets": sum(len(i) for i in gt_ids),
            "num_tracker_dets": sum(len(i) for i in pred_ids),
        }
    )
    return Sequence(acc, hota)


def _not_motmetrics(record: logging.LogRecord) -> bool:
    """Root-logger filter: motmetrics' ``compute_many`` logs its timings there at INFO ("partials: 0.9 seconds.")."""
    return f"{os.sep}motmetrics{os.sep}" not in record.pathname


def summarise(sequences: list[Sequence]) -> dict[str, float]:
    """The metrics over one or more sequences, pooled as each library does.

    motmetrics sums the counts, then takes ratios (IDF1's assignment stays per sequence); TrackEval
    sums HOTA's TP/FN/FP and weights AssA by TP. HOTA is 0, not ``nan``, without any box (TrackEval's
    convention)."""
    import motmetrics as mm
    from trackeval.metrics import HOTA

    if not sequences:
        return {ours: float("nan") for ours in (*NAMES, *HOTA_NAMES)}
    mh = mm.metrics.create()
    names = list(NAMES.values())
    if len(sequences) == 1:
        row = mh.compute(sequences[0].motmetrics, metrics=names, name="all").iloc[0]
    else:
        logging.getLogger().addFilter(_not_motmetrics)
        try:
            df = mh.compute_many(
                [s.motmetrics for s in sequences],
                metrics=names,
                names=[str(i) for i in range(len(sequences))],
                generate_overall=True,
            )
        finally:
            logging.getLogger().removeFilter(_not_motmetrics)
        row = df.loc["OVERALL"]
    hota = HOTA().combine_sequences({str(i): s.hota for i, s in enumerate(sequences)})
    return {
        **{ours: float(row[theirs]) for ours, theirs in NAMES.items()},
        **{ours: float(np.mean(hota[theirs])) for ours, theirs in HOTA_NAMES.items()},
    }


def mot_metrics(gt: list[FrameBoxes], pred: list[FrameBoxes], iou_threshold: float = 0.5) -> dict[str, float]:
    """CLEAR-MOT, ID and HOTA metrics of predicted tracks ``pred`` against ground truth ``gt`` for one sequence."""
    return summarise([accumulate(gt, pred, iou_threshold)])
