"""COCO-style box detection metrics in numpy, equal to pycocotools' ``COCOeval(iouType="bbox")``.

Only the ``"all"`` area range is evaluated and there are no crowd / ignore annotations, so every
ground-truth box counts. What is matched, and how, follows pycocotools step by step so the numbers
agree with it to the last bit (the tests compare against it):

* per image and class, detections are sorted by descending score with a stable sort (ties keep
  their input order, as pycocotools' ``argsort(-scores, kind="mergesort")``) and only the top
  ``max_dets`` are kept (the cap is per image *and* class, as in ``COCOeval.evaluateImg``);
* at every IoU threshold each detection, in that order, takes the still unmatched GT box of the
  same image and class with the highest IoU ``>= threshold``; on equal IoU the later GT (input
  order) wins, because pycocotools compares with ``<`` while scanning;
* per class, detections of all images are merged by a stable sort on descending score (ties:
  ascending image id, then the per-image order), precision is made monotone and read at the 101
  recall points ``0, 0.01, ..., 1``; recall is the final recall, ``0`` without detections;
* means run over classes with at least one GT box; pycocotools reports ``-1`` for a class (or a
  whole summary) without GT, here that is ``nan``.

Boxes are xyxy pixels, IoU comes from :func:`vt_models.boxes.iou_matrix` (COCO areas, ``w * h``).
COCO's "all" area range is ``[0, 1e10]`` with the *signed* area ``w * h``: a box with exactly one
inverted side (``x2 < x1`` xor ``y2 < y1``) or above 1e10 px is out of range. Such a GT box is
ignored (matched only when no regular GT is available; a detection matched to it counts neither
way, and it is not in the recall denominator) and such a detection is ignored when unmatched.
This is reproduced so that even malformed boxes give pycocotools' numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vt_models.boxes import iou_matrix

COCO_IOUS = np.linspace(0.5, 0.95, 10)
# The 101 recall points of COCO's interpolated precision (same construction as pycocotools).
COCO_RECALLS = np.linspace(0.0, 1.0, 101)
COCO_AREA_ALL = (0.0, 1e10)  # pycocotools' "all" area range, [0 ** 2, 1e5 ** 2]


def _out_of_range(boxes: np.ndarray) -> np.ndarray:
    """COCO's signed ``w * h`` area outside the "all" range (one inverted side, or huge)."""
    signed_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (signed_area < COCO_AREA_ALL[0]) | (signed_area > COCO_AREA_ALL[1])


def _greedy_match(ious: np.ndarray, thresholds: np.ndarray, gt_ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match D score-sorted detections to G GT boxes at T IoU thresholds -> (matched, on_ignored_gt).

    ``ious`` is (D, G) with the ignored GT boxes last; both results are (T, D) bool. All thresholds
    are handled at once per detection; only detections that reach the lowest threshold with some
    GT need visiting, the others are unmatched everywhere.
    """
    num_det, num_gt = ious.shape
    num_thr = len(thresholds)
    matched = np.zeros((num_thr, num_det), bool)
    on_ignored = np.zeros((num_thr, num_det), bool)
    if num_det == 0 or num_gt == 0:
        return matched, on_ignored
    # pycocotools caps the threshold just below 1 so that a perfect box still matches at t=1.
    thr = np.minimum(thresholds, 1 - 1e-10)[:, None]
    taken = np.zeros((num_thr, num_gt), bool)
    rows = np.arange(num_thr)
    for d in np.flatnonzero(ious.max(axis=1) >= thr.min()):
        ok = (ious[d] >= thr) & ~taken
        if not ok.any():
            continue
        # An ignored GT is only a fallback: pycocotools stops at the ignored ones once it has a
        # regular match.
        regular = ok & ~gt_ignore
        ok = np.where(regular.any(axis=1, keepdims=True), regular, ok)
        vals = np.where(ok, ious[d], -1.0)
        # Last index of the maximum: pycocotools replaces its best match on an equal IoU.
        g = num_gt - 1 - np.argmax(vals[:, ::-1], axis=1)
        hit = ok[rows, g]
        matched[hit, d] = True
        on_ignored[hit, d] = gt_ignore[g[hit]]
        taken[rows[hit], g[hit]] = True
    return matched, on_ignored


def _mean_valid(values: np.ndarray) -> float:
    """Mean over entries > -1 (pycocotools' marker for "no GT"), ``nan`` when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


@dataclass(frozen=True)
class Matches:
    """COCO matching of detections to GT, per image and class, done once.

    Matching never looks across images, so these flags stay valid for any multiset of the images:
    AP over a resampled set of images (a bootstrap over videos) only re-runs the accumulation,
    :func:`accumulate`, not the matching. Detections are the evaluated ones (top ``max_dets`` per
    image and class) in per-(class, image) order: descending score, then input order.
    """

    image_ids: np.ndarray  # (I,) every evaluated image, sorted
    det_image: np.ndarray  # (D,)
    det_labels: np.ndarray  # (D,)
    det_scores: np.ndarray  # (D,)
    tp: np.ndarray  # (T, D) bool
    fp: np.ndarray  # (T, D) bool
    gt_image: np.ndarray  # (G,) GT boxes that count (COCO's ignored ones left out)
    gt_labels: np.ndarray  # (G,)
    num_classes: int
    num_gt: int  # GT boxes on the evaluated images, ignored ones included
    num_det: int  # detections on the evaluated images, before the max_dets cap


def match_detections(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    image_ids: np.ndarray,
    class_names: list[str],
    max_dets: int = 100,
) -> Matches:
    """Validate the inputs and match every image's detections to its GT (see :func:`detection_metrics`)."""
    num_classes = len(class_names)
    if len(set(class_names)) != num_classes:
        raise ValueError(f"class names must be unique: {class_names}")
    image_ids = np.unique(np.asarray(image_ids, np.int64))
    det_image = np.asarray(det_image, np.int64).reshape(-1)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    det_labels = np.asarray(det_labels, np.int64).reshape(-1)
    gt_image = np.asarray(gt_image, np.int64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    if not len(det_image) == len(det_boxes) == len(det_scores) == len(det_labels):
        raise ValueError("det_image, det_boxes, det_scores and det_labels differ in length")
    if not len(gt_image) == len(gt_boxes) == len(gt_labels):
        raise ValueError("gt_image, gt_boxes and gt_labels differ in length")
    for name, labels in (("det_labels", det_labels), ("gt_labels", gt_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}")

    keep = np.isin(det_image, image_ids)
    det_image, det_boxes, det_scores, det_labels = det_image[keep], det_boxes[keep], det_scores[keep], det_labels[keep]
    keep = np.isin(gt_image, image_ids)
    gt_image, gt_boxes, gt_labels = gt_image[keep], gt_boxes[keep], gt_labels[keep]
    num_det, num_gt, num_thr = len(det_image), len(gt_image), len(COCO_IOUS)

    # Group by (class, image): one integer key, sorted the same way for detections and GT.
    det_key = det_labels * len(image_ids) + np.searchsorted(image_ids, det_image)
    gt_key = gt_labels * len(image_ids) + np.searchsorted(image_ids, gt_image)
    # Detections: by key, then descending score, then input order (pycocotools' stable sort).
    d_order = np.lexsort((np.arange(num_det), -det_scores, det_key))
    d_key = det_key[d_order]
    starts = np.flatnonzero(np.r_[True, d_key[1:] != d_key[:-1]]) if num_det else np.zeros(0, np.int64)
    rank = np.arange(num_det) - np.repeat(starts, np.diff(np.r_[starts, num_det]))
    d_order = d_order[rank < max_dets]  # pycocotools keeps the top max_dets per image and class
    d_key = det_key[d_order]
    # GT: by key, ignored boxes last, input order otherwise (pycocotools' stable sort on ignore).
    gt_ignore = _out_of_range(gt_boxes)
    g_order = np.lexsort((np.arange(num_gt), gt_ignore, gt_key))
    g_key = gt_key[g_order]

    # Per evaluated detection, in d_order: matched, and ignored (neither TP nor FP).
    matched = np.zeros((num_thr, len(d_order)), bool)
    ignored = np.zeros((num_thr, len(d_order)), bool)
    group_keys, group_start = np.unique(d_key, return_index=True)
    group_end = np.r_[group_start[1:], len(d_key)]
    g_lo = np.searchsorted(g_key, group_keys, "left")
    g_hi = np.searchsorted(g_key, group_keys, "right")
    # no detections: group_end still holds its closing len(d_key); zip stops at the empty starts
    for ds, de, gs, ge in zip(group_start, group_end, g_lo, g_hi, strict=False):
        if ge > gs:
            gts = g_order[gs:ge]
            ious = iou_matrix(det_boxes[d_order[ds:de]], gt_boxes[gts])
            matched[:, ds:de], ignored[:, ds:de] = _greedy_match(ious, COCO_IOUS, gt_ignore[gts])
    # Unmatched out-of-range detections are ignored too.
    ignored |= ~matched & _out_of_range(det_boxes[d_order])[None, :]
    return Matches(
        image_ids,
        det_image[d_order],
        det_labels[d_order],
        det_scores[d_order],
        matched & ~ignored,
        ~matched & ~ignored,
        gt_image[~gt_ignore],
        gt_labels[~gt_ignore],
        num_classes,
        num_gt,
        num_det,
    )


def accumulate(
    det_image: np.ndarray,
    det_labels: np.ndarray,
    det_scores: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    gt_per_class: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """COCO's precision (T, 101, K) and recall (T, K) from matched detections; -1 for a class without GT.

    The detections must come grouped per image and class in :class:`Matches` order (so that the
    stable sort below breaks score ties by image id, then per-image order, as pycocotools does).
    """
    num_thr, num_classes = tp.shape[0], len(gt_per_class)
    # Accumulate per class over images: stable sort by descending score, ties by image id, then
    # per-image order (the order pycocotools concatenates images in before its mergesort).
    c_order = np.lexsort((np.arange(len(det_labels)), det_image, -det_scores, det_labels))
    c_labels = det_labels[c_order]
    c_tp, c_fp = tp[:, c_order], fp[:, c_order]
    precision = -np.ones((num_thr, len(COCO_RECALLS), num_classes))
    recall = -np.ones((num_thr, num_classes))
    c_lo = np.searchsorted(c_labels, np.arange(num_classes), "left")
    c_hi = np.searchsorted(c_labels, np.arange(num_classes), "right")
    for k in range(num_classes):
        npig = gt_per_class[k]
        if npig == 0:
            continue  # stays -1: excluded from every mean, like pycocotools
        tps, fps = c_tp[:, c_lo[k] : c_hi[k]], c_fp[:, c_lo[k] : c_hi[k]]
        n = tps.shape[1]  # ignored detections included, as in pycocotools
        if n == 0:
            precision[:, :, k] = 0.0
            recall[:, k] = 0.0
            continue
        tp_sum = np.cumsum(tps, axis=1).astype(float)
        fp_sum = np.cumsum(fps, axis=1).astype(float)
        rc = tp_sum / npig
        # Same expression as pycocotools so the floats agree exactly.
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
        recall[:, k] = rc[:, -1]
        for t in range(num_thr):
            inds = np.searchsorted(rc[t], COCO_RECALLS, side="left")
            # Recall points beyond the reached recall get precision 0.
            precision[t, :, k] = np.where(inds < n, pr[t, np.minimum(inds, n - 1)], 0.0)
    return precision, recall


def detection_metrics(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    image_ids: np.ndarray,
    class_names: list[str],
    score_threshold: float = 0.5,
    max_dets: int = 100,
) -> dict[str, float]:
    """COCO mAP/AR plus thresholded precision/recall for box detections, as a flat dict of floats.

    Detections are ``det_*`` (N,) / (N, 4) xyxy, GT boxes ``gt_*`` (M,) / (M, 4) xyxy, labels are
    class indices into ``class_names``. ``image_ids`` lists every evaluated image, including images
    without GT and/or detections; boxes of other images are left out (as pycocotools' ``imgIds``).

    Keys: ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``mar_100`` (AR at ``max_dets``
    detections per image and class; the name keeps COCO's default), ``ap/<class>`` and
    ``ap50/<class>`` (``nan`` for a class without GT, 0 for a class with GT but no detections),
    ``precision`` / ``recall`` at IoU 0.5 over the evaluated (capped) detections with
    ``score >= score_threshold``: the TP/FP of AP@.5's greedy matching, so precision = TP / (TP +
    FP), 0.0 when no detection passes, and recall = TP / number of GT boxes, ``nan`` without GT
    (boxes COCO ignores, see the module docstring, count in neither). Also ``num_images``,
    ``num_gt``, ``num_det``: boxes on the evaluated images, ``num_det`` before the ``max_dets``
    cap. ``map``, ``map_50``, ``map_75`` and ``mar_100`` are ``nan`` when no class has GT
    (pycocotools prints -1).
    """
    m = match_detections(
        det_image, det_boxes, det_scores, det_labels, gt_image, gt_boxes, gt_labels, image_ids, class_names, max_dets
    )
    gt_per_class = np.bincount(m.gt_labels, minlength=m.num_classes)
    precision, recall = accumulate(m.det_image, m.det_labels, m.det_scores, m.tp, m.fp, gt_per_class)

    # Thresholded operating point: matching at IoU 0.5 is greedy by score, so the matches of the
    # detections above the threshold do not depend on those below it and can be reused.
    t50 = int(np.flatnonzero(COCO_IOUS == 0.5)[0])
    t75 = np.flatnonzero(COCO_IOUS == 0.75)
    above = m.det_scores >= score_threshold
    n_tp = int(m.tp[t50, above].sum())
    n_above = n_tp + int(m.fp[t50, above].sum())
    n_gt_counted = int(gt_per_class.sum())

    out: dict[str, float] = {
        "map": _mean_valid(precision),
        "map_50": _mean_valid(precision[[t50]]),
        "map_75": _mean_valid(precision[t75]),
        "mar_100": _mean_valid(recall),
        "precision": n_tp / n_above if n_above else 0.0,
        "recall": n_tp / n_gt_counted if n_gt_counted else float("nan"),
        "num_images": float(len(m.image_ids)),
        "num_gt": float(m.num_gt),
        "num_det": float(m.num_det),
    }
    for k, name in enumerate(class_names):
        out[f"ap/{name}"] = _mean_valid(precision[:, :, k])
        out[f"ap50/{name}"] = _mean_valid(precision[t50, :, k])
    return out


def map_over_videos(
    m: Matches, video_of_image: np.ndarray, num_videos: int | None = None
) -> Callable[[np.ndarray], float]:
    """``statistic(videos) -> mAP@[.5:.95]`` of any multiset of videos (e.g. a bootstrap resample).

    ``video_of_image[i]`` is the video (0..V-1, V = ``num_videos``, default: the highest + 1) of
    ``m.image_ids[i]``. A video drawn twice brings its
    images twice, as distinct images, so this is the mAP :func:`detection_metrics` gives on that
    resampled set of images; only the accumulation is redone, the per-image matching is reused.
    (Score ties across images are broken by draw order, then image id.) A resample without any GT
    box has no mAP: it counts as 0.0, the conservative value for a floor.
    """
    video_of_image = np.asarray(video_of_image, np.int64)
    if len(video_of_image) != len(m.image_ids):
        raise ValueError(f"video_of_image has {len(video_of_image)} entries for {len(m.image_ids)} images")
    if num_videos is None:
        num_videos = int(video_of_image.max()) + 1 if len(video_of_image) else 0
    num_images = len(m.image_ids)
    det_rank = np.searchsorted(m.image_ids, m.det_image)
    det_video = video_of_image[det_rank]
    dets = [np.flatnonzero(det_video == v) for v in range(num_videos)]  # keeps Matches order within a video
    gt_video = video_of_image[np.searchsorted(m.image_ids, m.gt_image)]
    gt_counts = np.zeros((num_videos, m.num_classes), np.int64)
    np.add.at(gt_counts, (gt_video, m.gt_labels), 1)

    def statistic(videos: np.ndarray) -> float:
        videos = np.asarray(videos, np.int64).reshape(-1)
        sel = np.concatenate([dets[v] for v in videos]) if len(videos) else np.zeros(0, np.int64)
        image = (
            np.concatenate([j * num_images + det_rank[dets[v]] for j, v in enumerate(videos)]) if len(videos) else sel
        )
        precision, _ = accumulate(
            image, m.det_labels[sel], m.det_scores[sel], m.tp[:, sel], m.fp[:, sel], gt_counts[videos].sum(axis=0)
        )
        value = _mean_valid(precision)
        return 0.0 if np.isnan(value) else value

    return statistic
