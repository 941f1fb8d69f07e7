"""CLEAR-MOT and identity (IDF1) metrics for multi-object tracking, numpy/scipy only.

Defined exactly as py-motmetrics' ``MOTAccumulator`` + ``metrics.compute`` with the IoU distance
``mm.distances.iou_matrix(gt, hyp, max_iou=1 - iou_threshold)`` (``tests/test_mot.py`` checks
this against motmetrics). Per frame:

1. a GT object whose last matched hypothesis (from any earlier frame) is present and still within
   the IoU threshold keeps it (a MATCH), GT objects taken in input order;
2. the remaining GT objects and hypotheses get a maximum-cardinality, then minimum-cost matching on
   ``1 - IoU`` (pairs with IoU below the threshold forbidden); a pair whose GT object was last
   matched to another hypothesis is an ID switch (a SWITCH, which still counts as matched);
3. the GT objects left over are misses, the hypotheses left over false positives.

IDF1/IDP/IDR use the global one-to-one assignment of GT to predicted trajectories that maximises
the number of frames in which the two are within the IoU threshold (Ristani et al. 2016).
Ids must be unique within a frame.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from vt_models.boxes import iou_matrix

if TYPE_CHECKING:
    from vt_models.track.tracker import TrackedBox

FrameBoxes = tuple[np.ndarray, np.ndarray]  # (ids (K,), boxes (K, 4) xyxy)


def tracks_to_frames(tracked: list[list[TrackedBox]]) -> list[FrameBoxes]:
    """Tracker output (predicted boxes included) -> per-frame ``(ids, boxes)`` for ``mot_metrics``."""
    return [
        (np.array([t.track_id for t in frame], np.int64), np.array([t.box for t in frame], np.float64).reshape(-1, 4))
        for frame in tracked
    ]


def _assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max-cardinality, then min-cost matching over the finite entries of ``cost`` (NaN: forbidden).

    Same construction as motmetrics' scipy solver: forbidden pairs get a cost so large that taking
    one is always worse than any matching without it, and are dropped afterwards. Using the very
    same matrix keeps even tie-breaking identical.
    """
    valid = np.isfinite(cost)
    if not valid.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not valid.all():
        c = np.abs(cost[valid]).max() + 1
        cost = np.where(valid, cost, 2 * min(cost.shape) * c + 1)
    rows, cols = linear_sum_assignment(cost)
    keep = valid[rows, cols]
    return rows[keep], cols[keep]


def _div(a: float, b: float) -> float:
    # motmetrics' quiet_divide: 0/0 -> nan, x/0 -> inf, no warnings
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.true_divide(np.float64(a), np.float64(b)))


def mot_metrics(gt: list[FrameBoxes], pred: list[FrameBoxes], iou_threshold: float = 0.5) -> dict[str, float]:
    """CLEAR-MOT and ID metrics of predicted tracks ``pred`` against ground truth ``gt`` (per frame).

    ``motp`` is py-motmetrics' MOTP with the IoU distance: the mean of ``1 - IoU`` over matched
    pairs (lower is better). ``num_matches`` counts all matched pairs, ID switches included
    (motmetrics' ``num_detections``); ``mota = 1 - (misses + false_positives + id_switches) / num_gt``.
    A pair can match when IoU >= ``iou_threshold``. Empty denominators give nan (or -inf for mota),
    as in motmetrics.
    """
    if len(gt) != len(pred):
        raise ValueError(f"gt has {len(gt)} frames, pred has {len(pred)}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    max_dist = 1.0 - iou_threshold

    last_match: dict[Hashable, Hashable] = {}  # GT id -> hypothesis id of its latest match
    states: dict[Hashable, list[bool]] = defaultdict(list)  # GT id -> matched?, per frame present
    gt_frames: dict[Hashable, int] = defaultdict(int)
    pred_frames: dict[Hashable, int] = defaultdict(int)
    overlap: dict[tuple[Hashable, Hashable], int] = defaultdict(int)  # frames a GT/pred pair is within threshold
    n_match = n_switch = n_fp = n_miss = n_gt = n_pred = 0
    dist_sum = 0.0

    for (g_ids, g_boxes), (p_ids, p_boxes) in zip(gt, pred):
        oids = np.asarray(g_ids).reshape(-1).tolist()
        hids = np.asarray(p_ids).reshape(-1).tolist()
        g_boxes = np.asarray(g_boxes, np.float64).reshape(-1, 4)
        p_boxes = np.asarray(p_boxes, np.float64).reshape(-1, 4)
        if len(oids) != len(g_boxes) or len(hids) != len(p_boxes):
            raise ValueError("ids and boxes differ in length")
        no, nh = len(oids), len(hids)
        n_gt += no
        n_pred += nh
        for o in oids:
            gt_frames[o] += 1
        for h in hids:
            pred_frames[h] += 1

        o_done = np.zeros(no, bool)
        h_done = np.zeros(nh, bool)
        if no and nh:
            dist = 1.0 - iou_matrix(g_boxes, p_boxes)
            dist[dist > max_dist] = np.nan
            for i, j in zip(*np.nonzero(np.isfinite(dist))):
                overlap[oids[i], hids[j]] += 1

            # 1. keep correspondences from earlier frames that still hold
            for i, o in enumerate(oids):
                if o not in last_match:
                    continue
                js = [j for j in range(nh) if not h_done[j] and hids[j] == last_match[o]]
                if js and np.isfinite(dist[i, js[0]]):
                    o_done[i] = h_done[js[0]] = True
                    n_match += 1
                    dist_sum += dist[i, js[0]]

            # 2. optimal matching of the rest; a changed partner is an ID switch
            rest = dist.copy()
            rest[o_done, :] = np.nan
            rest[:, h_done] = np.nan
            for i, j in zip(*_assign(rest)):
                o, h = oids[i], hids[j]
                if o in last_match and last_match[o] != h:
                    n_switch += 1
                else:
                    n_match += 1
                dist_sum += dist[i, j]
                last_match[o] = h
                o_done[i] = h_done[j] = True

        n_miss += int(no - o_done.sum())
        n_fp += int(nh - h_done.sum())
        for o, done in zip(oids, o_done):
            states[o].append(bool(done))

    # Fragmentations: tracked -> missed transitions between an object's first and last tracked frame.
    frag = 0
    for seq in states.values():
        tracked = np.flatnonzero(seq)
        if len(tracked):
            span = np.asarray(seq[tracked[0] : tracked[-1] + 1])
            frag += int(np.sum(span[:-1] & ~span[1:]))
    ratios = [_div(sum(seq), len(seq)) for seq in states.values()]

    # Global ID assignment: maximise the frames in which assigned trajectories overlap.
    o_keys, h_keys = sorted(gt_frames), sorted(pred_frames)
    idtp = 0.0
    if overlap:
        oi = {o: k for k, o in enumerate(o_keys)}
        hi = {h: k for k, h in enumerate(h_keys)}
        tp = np.zeros((len(o_keys), len(h_keys)))
        for (o, h), c in overlap.items():
            tp[oi[o], hi[h]] = c
        r, c = linear_sum_assignment(tp, maximize=True)
        idtp = float(tp[r, c].sum())

    n_det = n_match + n_switch
    return {
        "mota": 1.0 - _div(n_miss + n_switch + n_fp, n_gt),
        "motp": _div(dist_sum, n_det),
        "idf1": _div(2 * idtp, n_gt + n_pred),
        "idp": _div(idtp, n_pred),
        "idr": _div(idtp, n_gt),
        "precision": _div(n_det, n_det + n_fp),
        "recall": _div(n_det, n_gt),
        "id_switches": float(n_switch),
        "fragmentations": float(frag),
        "false_positives": float(n_fp),
        "misses": float(n_miss),
        "num_matches": float(n_det),
        "num_gt": float(n_gt),
        "num_pred": float(n_pred),
        "num_gt_tracks": float(len(states)),
        "mostly_tracked": float(sum(r >= 0.8 for r in ratios)),
        "partially_tracked": float(sum(0.2 <= r < 0.8 for r in ratios)),
        "mostly_lost": float(sum(r < 0.2 for r in ratios)),
    }
