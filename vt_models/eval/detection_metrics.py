"""COCO box detection metrics: a thin adapter over faster-coco-eval (pycocotools' ``COCOeval`` in C++).

faster-coco-eval does COCO's matching (per image and class, greedy by score at each IoU threshold,
the top ``max_dets`` detections per image and class) and accumulation (101-point interpolated
precision, recall); its numbers equal pycocotools' ``COCOeval(iouType="bbox")`` (the tests compare).
This module turns our flat arrays (xyxy pixel boxes, class indices ``0..K-1``, every evaluated image
listed) into its COCO objects and reads its precision (T, R, K) and recall (T, K) back as a flat dict.
Only COCO's "all" area range is evaluated and there are no crowd annotations, so every box counts;
boxes COCO would ignore (an inverted side, or an area above 1e10 px) are rejected instead.

On top of the library: precision and recall at a score threshold (a second pass at IoU 0.5 over the
detections above it), and the mAP of a resampled multiset of videos for the bootstrap, which
re-accumulates the library's per-image matches instead of matching again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vt_models.boxes import xyxy_to_xywh

COCO_AREA_ALL = [0.0, 1e10]  # COCO's "all" area range, [0 ** 2, 1e5 ** 2]: the only one evaluated


def _quiet(*_: Any, **__: Any) -> None:
    """faster-coco-eval's progress lines ("Evaluate annotation type *bbox*", timings) are dropped."""


def _mean_valid(values: np.ndarray) -> float:
    """Mean over entries > -1 (COCO's marker for "no GT"), ``nan`` when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


def _coco_evaluate(
    det: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    gt: tuple[np.ndarray, np.ndarray, np.ndarray],
    image_ids: np.ndarray,
    num_classes: int,
    max_dets: int,
    iou_thresholds: list[float] | None = None,
) -> Any:
    """faster-coco-eval's ``COCOeval_faster`` after ``evaluate()`` (per-image matching) on our arrays.

    Category ids are ``label + 1`` (COCO's are 1-based), annotation ids follow input order, and the
    detections keep input order, which COCO's stable sort uses to break score ties.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    det_image, det_boxes, det_scores, det_labels = det
    gt_image, gt_boxes, gt_labels = gt
    coco_gt = COCO(
        {
            "images": [{"id": i} for i in image_ids.tolist()],
            "categories": [{"id": k + 1} for k in range(num_classes)],
            "annotations": [
                {"id": j + 1, "image_id": i, "category_id": c + 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                for j, (i, c, b) in enumerate(
                    zip(gt_image.tolist(), gt_labels.tolist(), xyxy_to_xywh(gt_boxes).tolist(), strict=True)
                )
            ],
        },
        print_function=_quiet,
    )
    coco_det = coco_gt.loadRes(
        [
            {"image_id": i, "category_id": c + 1, "bbox": b, "score": s}
            for i, c, b, s in zip(
                det_image.tolist(),
                det_labels.tolist(),
                xyxy_to_xywh(det_boxes).tolist(),
                det_scores.tolist(),
                strict=True,
            )
        ]
    )
    ev = COCOeval_faster(coco_gt, coco_det, iouType="bbox", separate_eval=True, print_function=_quiet)
    p = ev.params
    p.imgIds, p.catIds = image_ids.tolist(), list(range(1, num_classes + 1))
    p.areaRng, p.areaRngLbl, p.maxDets = [COCO_AREA_ALL], ["all"], [max_dets]
    if iou_thresholds is not None:
        p.iouThrs = np.asarray(iou_thresholds, np.float64)
    ev.evaluate()
    return ev


@dataclass(frozen=True)
class Matches:
    """COCO matching of detections to GT, per image and class, done once (faster-coco-eval's ``evaluate()``).

    Matching never looks across images, so it stays valid for any multiset of the images: AP over a
    resampled set of images (a bootstrap over videos) only re-runs the library's accumulation.
    """

    evaluation: Any  # faster_coco_eval.COCOeval_faster after evaluate()
    image_ids: np.ndarray  # (I,) every evaluated image, sorted
    det: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # image, xyxy box, score, label on those images
    gt: tuple[np.ndarray, np.ndarray, np.ndarray]  # image, xyxy box, label on those images
    num_classes: int


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
    for name, boxes in (("det_boxes", det_boxes), ("gt_boxes", gt_boxes)):
        # COCO would silently ignore such boxes (its signed area w * h falls outside the "all" range),
        # which the thresholded precision/recall below does not model: refuse them instead.
        wh = boxes[:, 2:] - boxes[:, :2]
        if (wh < 0).any() or (wh[:, 0] * wh[:, 1] > COCO_AREA_ALL[1]).any():
            raise ValueError(f"{name} must be xyxy with x1 <= x2, y1 <= y2 and an area of at most 1e10 px")

    # Boxes of other images are left out, as pycocotools' params.imgIds does.
    keep = np.isin(det_image, image_ids)
    det = (det_image[keep], det_boxes[keep], det_scores[keep], det_labels[keep])
    keep = np.isin(gt_image, image_ids)
    gt = (gt_image[keep], gt_boxes[keep], gt_labels[keep])
    evaluation = _coco_evaluate(det, gt, image_ids, num_classes, max_dets)
    return Matches(evaluation, image_ids, det, gt, num_classes)


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
    ``score >= score_threshold``: COCO's greedy matching at IoU 0.5 of just those detections (the
    same matches AP@.5 makes, since matching goes by descending score), precision = TP / those
    detections, 0.0 when none passes, recall = TP / GT boxes, ``nan`` without GT. Also
    ``num_images``, ``num_gt``, ``num_det``: boxes on the evaluated images, ``num_det`` before the
    ``max_dets`` cap. ``map``, ``map_50``, ``map_75`` and ``mar_100`` are ``nan`` when no class has GT
    (pycocotools prints -1).
    """
    m = match_detections(
        det_image, det_boxes, det_scores, det_labels, gt_image, gt_boxes, gt_labels, image_ids, class_names, max_dets
    )
    ev = m.evaluation
    ev.accumulate()
    iou_thresholds = np.asarray(ev.params.iouThrs)
    precision = ev.eval["precision"][..., 0, 0]  # (T, R, K): the one area range and max_dets
    recall = ev.eval["recall"][..., 0, 0]  # (T, K)
    t50, t75 = np.flatnonzero(np.isclose(iou_thresholds, 0.5)), np.flatnonzero(np.isclose(iou_thresholds, 0.75))

    # The operating point: with one IoU threshold every match the library reports is a TP, as no box
    # is ignored (see match_detections).
    det_image, det_boxes, det_scores, det_labels = m.det
    above = det_scores >= score_threshold
    det_above = (det_image[above], det_boxes[above], det_scores[above], det_labels[above])
    at_50 = _coco_evaluate(det_above, m.gt, m.image_ids, m.num_classes, max_dets, iou_thresholds=[0.5])
    at_50.accumulate()
    n_tp = len(at_50.eval["matched"])
    _, per_image_class = np.unique(np.stack([det_above[0], det_above[3]]), axis=1, return_counts=True)
    n_above = int(np.minimum(per_image_class, max_dets).sum())  # the cap, as the library applies it
    n_gt = len(m.gt[0])

    out: dict[str, float] = {
        "map": _mean_valid(precision),
        "map_50": _mean_valid(precision[t50]),
        "map_75": _mean_valid(precision[t75]),
        "mar_100": _mean_valid(recall),
        "precision": n_tp / n_above if n_above else 0.0,
        "recall": n_tp / n_gt if n_gt else float("nan"),
        "num_images": float(len(m.image_ids)),
        "num_gt": float(n_gt),
        "num_det": float(len(det_image)),
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
    ``m.image_ids[i]``. A video drawn twice brings its images twice, as distinct images, so this is
    the mAP :func:`detection_metrics` gives on that resampled set of images: the library's
    accumulation runs on its per-image evaluations, repeated and reordered (score ties across images
    go by draw order, then image id). A resample without any GT box has no mAP: it counts as 0.0,
    the conservative value for a floor.
    """
    import faster_coco_eval.faster_eval_api_cpp as coco_cpp

    video_of_image = np.asarray(video_of_image, np.int64)
    if len(video_of_image) != len(m.image_ids):
        raise ValueError(f"video_of_image has {len(video_of_image)} entries for {len(m.image_ids)} images")
    if num_videos is None:
        num_videos = int(video_of_image.max()) + 1 if len(video_of_image) else 0
    images_of = [np.flatnonzero(video_of_image == v) for v in range(num_videos)]  # image id order within a video
    # faster-coco-eval keeps one evaluation per (class, area range, image), class-major, image-minor
    # (pycocotools' evalImgs layout); with the single area range, class k's image i is k * I + i.
    evaluations, num_images = m.evaluation._evalImgs_cpp, len(m.image_ids)
    if len(evaluations) != m.num_classes * num_images:
        raise RuntimeError("faster-coco-eval's per-image evaluations are not laid out as expected")

    def statistic(videos: np.ndarray) -> float:
        images = [i for v in np.asarray(videos, np.int64).reshape(-1) for i in images_of[v]]
        params = copy.copy(m.evaluation._paramsEval)
        params.imgIds = list(range(len(images)))  # only their number is read: distinct images
        resampled = [evaluations[k * num_images + i] for k in range(m.num_classes) for i in images]
        value = _mean_valid(coco_cpp.COCOevalAccumulate(params, resampled)["precision"])
        return 0.0 if np.isnan(value) else value

    return statistic
