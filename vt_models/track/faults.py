"""Faults injected into one video's detections, to measure what the tracker bridges (``vt bench track``).

Pure functions of (per-frame detections, per-frame ground-truth tracks, a numpy Generator): the GT only
says where the objects are, so that an "occlusion" removes the detections of one real object.

* :func:`drop_runs`: occlusion. Every GT track loses its detections for ``k`` consecutive frames inside
  its visible life (seen before and after).
* :func:`add_low_score_noise`: clutter. False boxes with scores between the tracker's two thresholds,
  the detections ByteTrack's second matching stage reads and must not turn into tracks.
* :func:`detections_from_gt`: a simulated detector (GT boxes with pixel jitter), for a tracker sweep
  before a detector has learned anything.
"""

from __future__ import annotations

import numpy as np

from vt_models.boxes import iou_matrix
from vt_models.eval.mot import FrameBoxes
from vt_models.track.tracker import FrameDetections


def drop_runs(
    frames: list[FrameDetections], gt: list[FrameBoxes], k: int, rng: np.random.Generator, iou: float = 0.5
) -> list[FrameDetections]:
    """Occlusion: for each GT track, ``k`` consecutive frames of its visible life, with at least one visible
    frame before and after them (the start drawn uniformly), in which every detection with IoU >= ``iou``
    with its box is removed. So each run is a gap a tracker can bridge; tracks visible in fewer than
    ``k + 2`` frames keep their detections."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(frames) != len(gt):
        raise ValueError(f"{len(frames)} frames of detections for {len(gt)} frames of ground truth")
    drop = [np.zeros(len(f), bool) for f in frames]
    ids = np.unique(np.concatenate([np.asarray(g[0], np.int64) for g in gt])) if gt else np.zeros(0, np.int64)
    for track in ids:
        visible = [t for t, (g_ids, _) in enumerate(gt) if track in g_ids]
        if len(visible) < k + 2:
            continue
        first = 1 + int(rng.integers(len(visible) - k - 1))  # 1 .. len - k - 1: seen before and after the run
        for t in visible[first : first + k]:
            g_ids, g_boxes = gt[t]
            hit = np.flatnonzero(np.asarray(g_ids) == track)
            if not len(frames[t]):
                continue
            overlap = iou_matrix(np.asarray(g_boxes, np.float64)[hit].reshape(-1, 4), frames[t].boxes)[0]
            drop[t] |= overlap >= iou
    return [FrameDetections(f.boxes[~d], f.scores[~d], f.labels[~d]) for f, d in zip(frames, drop, strict=True)]


def add_low_score_noise(
    frames: list[FrameDetections],
    gt: list[FrameBoxes],
    per_frame: float,
    low: float,
    high: float,
    rng: np.random.Generator,
    num_classes: int = 1,
) -> list[FrameDetections]:
    """Clutter: Poisson(``per_frame``) candidate boxes per frame, scores uniform in [``low``, ``high``), each the
    size of a GT box of the video placed uniformly within the extent of the video's GT boxes; a candidate
    with IoU >= 0.5 with one of the frame's GT boxes is dropped, so every added box is a false one."""
    if len(frames) != len(gt):
        raise ValueError(f"{len(frames)} frames of detections for {len(gt)} frames of ground truth")
    if per_frame < 0 or not 0 <= low < high <= 1:
        raise ValueError(f"need per_frame >= 0 and 0 <= low < high <= 1, got {per_frame}, {low}, {high}")
    boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for _, b in gt]) if gt else np.zeros((0, 4))
    if not len(boxes):
        return list(frames)  # no object to take a size and an extent from
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    sizes = boxes[:, 2:] - boxes[:, :2]
    out = []
    for f, (_, g_boxes) in zip(frames, gt, strict=True):
        n = int(rng.poisson(per_frame))
        wh = sizes[rng.integers(len(sizes), size=n)]
        xy = lo + rng.random((n, 2)) * np.maximum(hi - lo - wh, 0)
        noise = np.concatenate([xy, xy + wh], axis=1)
        g_boxes = np.asarray(g_boxes, np.float64).reshape(-1, 4)
        if len(g_boxes) and n:
            noise = noise[iou_matrix(g_boxes, noise).max(axis=0) < 0.5]
            n = len(noise)
        out.append(
            FrameDetections(
                np.concatenate([f.boxes, noise]),
                np.concatenate([f.scores, rng.uniform(low, high, n)]),
                np.concatenate([f.labels, rng.integers(num_classes, size=n)]),
            )
        )
    return out


def detections_from_gt(
    gt: list[FrameBoxes], jitter_px: float, score: float, rng: np.random.Generator
) -> list[FrameDetections]:
    """A simulated detector: every GT box, each corner moved by N(0, ``jitter_px``), at ``score``, label 0."""
    out = []
    for _, boxes in gt:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        noisy = boxes + rng.normal(0.0, jitter_px, boxes.shape)
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1.0)  # keep x1 < x2, y1 < y2
        out.append(FrameDetections(noisy, np.full(len(boxes), score), np.zeros(len(boxes), np.int64)))
    return out
