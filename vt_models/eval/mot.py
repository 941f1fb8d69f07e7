"""CLEAR-MOT and identity (IDF1) metrics for multi-object tracking: a thin adapter over py-motmetrics.

Per frame, GT and predicted boxes (xyxy) are compared by IoU; a pair can match when IoU >=
``iou_threshold`` (motmetrics' distance ``1 - IoU`` with ``max_iou = 1 - iou_threshold``). The IoU
matrix is ours (:func:`vt_models.boxes.iou_matrix`): motmetrics 1.4's ``iou_matrix`` calls
``np.asfarray``, which numpy 2 removed. Everything else, the frame-by-frame matching (kept
correspondences, then maximum-cardinality minimum-cost matching, ID switches), IDF1's global
assignment and pooling over videos, is motmetrics' own ``MOTAccumulator`` and ``compute_many``.

HOTA is not reported: its reference implementations (TrackEval, the ``trackers`` package) depend on
``opencv-python``, whose ``cv2`` overwrites ``opencv-python-headless``'s and needs GUI libraries
(libGL) that servers lack.
"""

from __future__ import annotations

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


def tracks_to_frames(tracked: list[list[TrackedBox]]) -> list[FrameBoxes]:
    """Tracker output (predicted boxes included) -> per-frame ``(ids, boxes)`` for ``mot_metrics``."""
    return [
        (np.array([t.track_id for t in frame], np.int64), np.array([t.box for t in frame], np.float64).reshape(-1, 4))
        for frame in tracked
    ]


def accumulate(gt: list[FrameBoxes], pred: list[FrameBoxes], iou_threshold: float = 0.5) -> Any:
    """One sequence (video) into a motmetrics ``MOTAccumulator``."""
    import motmetrics as mm

    if len(gt) != len(pred):
        raise ValueError(f"gt has {len(gt)} frames, pred has {len(pred)}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    acc = mm.MOTAccumulator(auto_id=True)
    for (g_ids, g_boxes), (p_ids, p_boxes) in zip(gt, pred, strict=True):
        oids, hids = np.asarray(g_ids).reshape(-1).tolist(), np.asarray(p_ids).reshape(-1).tolist()
        g_boxes = np.asarray(g_boxes, np.float64).reshape(-1, 4)
        p_boxes = np.asarray(p_boxes, np.float64).reshape(-1, 4)
        if len(oids) != len(g_boxes) or len(hids) != len(p_boxes):
            raise ValueError("ids and boxes differ in length")
        dist = 1.0 - iou_matrix(g_boxes, p_boxes) if len(oids) and len(hids) else np.zeros((len(oids), len(hids)))
        dist[dist > 1.0 - iou_threshold] = np.nan  # motmetrics: NaN = may not match
        acc.update(oids, hids, dist)
    return acc


def summarise(accumulators: list[Any]) -> dict[str, float]:
    """The metrics over one or more sequences, pooled as motmetrics does (counts summed, then ratios)."""
    import motmetrics as mm

    if not accumulators:
        return {ours: float("nan") for ours in NAMES}
    mh = mm.metrics.create()
    names = list(NAMES.values())
    if len(accumulators) == 1:
        row = mh.compute(accumulators[0], metrics=names, name="all").iloc[0]
    else:
        df = mh.compute_many(
            accumulators, metrics=names, names=[str(i) for i in range(len(accumulators))], generate_overall=True
        )
        row = df.loc["OVERALL"]
    return {ours: float(row[theirs]) for ours, theirs in NAMES.items()}


def mot_metrics(gt: list[FrameBoxes], pred: list[FrameBoxes], iou_threshold: float = 0.5) -> dict[str, float]:
    """CLEAR-MOT and ID metrics of predicted tracks ``pred`` against ground truth ``gt`` for one sequence."""
    return summarise([accumulate(gt, pred, iou_threshold)])
