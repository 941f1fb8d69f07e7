"""The faster-coco-eval adapter (``vt_models.eval.detection_metrics``): our flat xyxy arrays give pycocotools'
COCOeval (bbox) numbers on the same data, edge cases included, and the thresholded precision/recall equal
pycocotools' own matches at IoU 0.5."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vt_models.boxes import xyxy_to_xywh
from vt_models.eval.detection_metrics import detection_metrics

TOL = 1e-12


def coco_reference(case: dict, max_dets: int = 100) -> COCOeval:
    """Run pycocotools on a case (labels -> category_id label+1, annotation ids from 1)."""
    k = len(case["class_names"])
    gt_xywh = xyxy_to_xywh(case["gt_boxes"])
    gt = {
        "images": [{"id": int(i)} for i in case["image_ids"]],
        "categories": [{"id": c + 1, "name": n} for c, n in enumerate(case["class_names"])],
        "annotations": [
            {
                "id": j + 1,
                "image_id": int(im),
                "category_id": int(lab) + 1,
                "bbox": [float(v) for v in b],
                "area": float(b[2] * b[3]),
                "iscrowd": 0,
            }
            for j, (im, lab, b) in enumerate(zip(case["gt_image"], case["gt_labels"], gt_xywh, strict=True))
        ],
    }
    dets = [
        {"image_id": int(im), "category_id": int(lab) + 1, "bbox": [float(v) for v in b], "score": float(s)}
        for im, lab, b, s in zip(
            case["det_image"], case["det_labels"], xyxy_to_xywh(case["det_boxes"]), case["det_scores"], strict=True
        )
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:  # pycocotools' loadRes refuses an empty list: an empty result set built by hand
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if max_dets != 100:
            ev.params.maxDets = [1, 2, max_dets]
        ev.evaluate()
        ev.accumulate()
        if max_dets == 100:
            ev.summarize()
    assert ev.eval["precision"].shape[2] == k
    return ev


def ours(case: dict, **kw) -> dict[str, float]:
    keys = (
        "det_image",
        "det_boxes",
        "det_scores",
        "det_labels",
        "gt_image",
        "gt_boxes",
        "gt_labels",
        "image_ids",
        "class_names",
    )
    return detection_metrics(**{key: case[key] for key in keys}, **kw)


def ref_mean(values: np.ndarray) -> float:
    v = values[values > -1]
    return float(np.mean(v)) if v.size else float("nan")


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL


def assert_matches_coco(case: dict, max_dets: int = 100) -> dict[str, float]:
    m = ours(case, max_dets=max_dets)
    ev = coco_reference(case, max_dets)
    prec, rec = ev.eval["precision"][:, :, :, 0, -1], ev.eval["recall"][:, :, 0, -1]
    if max_dets == 100:
        s = ev.stats
        expected = {"map": s[0], "map_50": s[1], "map_75": s[2], "mar_100": s[8]}
        # pycocotools prints -1 where no class has GT; we return nan there.
        expected = {k: float("nan") if v == -1 else float(v) for k, v in expected.items()}
    else:
        expected = {
            "map": ref_mean(prec),
            "map_50": ref_mean(prec[[0]]),
            "map_75": ref_mean(prec[[5]]),
            "mar_100": ref_mean(rec),
        }
    for c, name in enumerate(case["class_names"]):
        expected[f"ap/{name}"] = ref_mean(prec[:, :, c])
        expected[f"ap50/{name}"] = ref_mean(prec[0, :, c])
    # The operating point from pycocotools' own per-image matches at IoU 0.5 (its evalImgs: the capped
    # detections of each image and class, "all" area range), detections with score >= 0.5.
    tp = n_above = 0
    for e in ev.evalImgs:
        if e is not None and e["aRng"] == ev.params.areaRng[0]:
            above = np.asarray(e["dtScores"]) >= 0.5
            tp, n_above = tp + int((e["dtMatches"][0][above] > 0).sum()), n_above + int(above.sum())
    n_gt = len(case["gt_image"])
    expected["precision"] = tp / n_above if n_above else 0.0
    expected["recall"] = tp / n_gt if n_gt else float("nan")
    bad = {k: (m[k], v) for k, v in expected.items() if not same(m[k], v)}
    assert not bad, f"ours vs pycocotools differ: {bad}"
    return m


def random_case(seed: int, float_coords: bool = False) -> dict:
    """Clustered, overlapping boxes with coarse (tied) scores; class 4 has no GT, class 5 is never predicted.

    Image 0 of the list gets >100 detections of class 0 (max_dets cap), a few images get no GT,
    a few no detections, and the detection order is shuffled so input order != image order.
    """
    rng = np.random.default_rng(seed)
    n_img, k = 25, 6
    image_ids = rng.choice(np.arange(1, 10_000), n_img, replace=False)  # unsorted, non-contiguous
    gi, gb, gl, di, db, ds, dl = [], [], [], [], [], [], []

    def box(x: float, y: float, w: float, h: float) -> list[float]:
        return [x, y, x + max(w, 1), y + max(h, 1)]

    for n, im in enumerate(image_ids):
        n_gt = 0 if n % 7 == 3 else int(rng.integers(1, 9))
        no_det = n % 5 == 4
        for _ in range(n_gt):
            # A small canvas so boxes of the same image overlap several GTs.
            x, y = rng.integers(0, 50, 2)
            w, h = rng.integers(6, 40, 2)
            lab = int(rng.choice([0, 1, 2, 3, 5]))
            gi.append(im), gb.append(box(x, y, w, h)), gl.append(lab)
            for _ in range(int(rng.integers(0, 3)) * (not no_det)):
                j = rng.integers(-4, 5, 4)
                pl = lab if rng.random() < 0.85 and lab != 5 else int(rng.integers(0, 5))
                di.append(im), db.append(box(x + j[0], y + j[1], w + j[2], h + j[3])), dl.append(pl)
                ds.append(round(float(rng.random()), 1))
        for _ in range(int(rng.integers(0, 4)) * (not no_det)):  # pure false positives
            x, y = rng.integers(0, 60, 2)
            w, h = rng.integers(4, 30, 2)
            (
                di.append(im),
                db.append(box(x, y, w, h)),
                dl.append(int(rng.integers(0, 5))),
                ds.append(round(float(rng.random()), 1)),
            )
    # The crowded image: 6 class-0 GTs and 150 class-0 detections, many good ones scored low.
    im = image_ids[0]
    for g in range(6):
        x, y = 30 * g, 10
        gi.append(im), gb.append(box(x, y, 25, 25)), gl.append(0)
    for _ in range(150):
        g = int(rng.integers(0, 6))
        j = rng.integers(-6, 7, 4)
        di.append(im), db.append(box(30 * g + j[0], 10 + j[1], 25 + j[2], 25 + j[3])), dl.append(0)
        ds.append(round(float(rng.random()), 2))
    db_arr, gb_arr = np.array(db, float), np.array(gb, float)
    if float_coords:
        db_arr, gb_arr = db_arr * 1.37 + 0.113, gb_arr * 1.37 + 0.113
    perm = rng.permutation(len(di))
    return {
        "det_image": np.array(di)[perm],
        "det_boxes": db_arr[perm],
        "det_scores": np.array(ds)[perm],
        "det_labels": np.array(dl)[perm],
        "gt_image": np.array(gi),
        "gt_boxes": gb_arr,
        "gt_labels": np.array(gl),
        "image_ids": image_ids,
        "class_names": [f"c{c}" for c in range(k)],
    }


@pytest.mark.parametrize("seed", range(6))
def test_equals_pycocotools_random(seed: int) -> None:
    case = random_case(seed, float_coords=seed == 5)
    m = assert_matches_coco(case)
    # The case must exercise what it claims to: absent class, unpredicted class, the cap, ties.
    assert math.isnan(m["ap/c4"]) and m["ap/c5"] == 0.0
    assert (case["det_image"] == case["image_ids"][0]).sum() > 100
    assert len(np.unique(case["det_scores"])) < len(case["det_scores"]) / 2
    assert 0.0 < m["map"] < 1.0 and m["num_images"] == 25.0


@pytest.mark.parametrize("key", ["det_boxes", "gt_boxes"])
@pytest.mark.parametrize("bad", [[5, 0, 0, 10], [0, 5, 10, 0], [0, 0, 1.2e5, 1e5]])
def test_boxes_coco_would_ignore_are_refused(key: str, bad: list[float]) -> None:
    """An inverted side or an area above 1e10 px puts a box outside COCO's "all" area range, where
    pycocotools silently ignores it; the adapter refuses it rather than report numbers that skip it."""
    case = tie_case(False)
    case[key] = np.r_[case[key][:-1], [bad]]
    with pytest.raises(ValueError, match="x1 <= x2"):
        ours(case)
    assert ours(tie_case(False))["map"] > 0  # the same case with regular boxes is fine


@pytest.mark.parametrize("seed", range(2))
def test_equals_pycocotools_small_max_dets(seed: int) -> None:
    assert_matches_coco(random_case(seed + 10), max_dets=5)


def test_max_dets_cap_matters() -> None:
    """Without the per-image cap the crowded image would give different numbers."""
    case = random_case(0)
    assert ours(case, max_dets=100)["mar_100"] != ours(case, max_dets=1000)["mar_100"]


def tie_case(reverse_gt: bool) -> dict:
    """One det with equal IoU (90/110) to two GTs: pycocotools gives it the later GT."""
    a, b = [0, 0, 10, 10], [2, 0, 12, 10]
    gts = [b, a] if reverse_gt else [a, b]
    return {
        "det_image": np.array([1, 1]),
        "det_boxes": np.array([[1, 0, 11, 10], [0, 0, 10, 10]], float),
        "det_scores": np.array([0.9, 0.8]),
        "det_labels": np.array([0, 0]),
        "gt_image": np.array([1, 1]),
        "gt_boxes": np.array(gts, float),
        "gt_labels": np.array([0, 0]),
        "image_ids": np.array([1]),
        "class_names": ["x"],
    }


def test_equal_iou_tie_takes_later_gt() -> None:
    later_b = assert_matches_coco(tie_case(reverse_gt=False))
    later_a = assert_matches_coco(tie_case(reverse_gt=True))
    # First det takes b -> the second (== a) matches a at IoU 1: both TP up to 0.8.
    # First det takes a -> the second only gets b at IoU 80/120 = 0.667: FP at 0.7..0.8.
    # From 0.85 on the first det matches nothing and the second takes a in both orders.
    assert later_b["map_50"] == later_a["map_50"] == 1.0
    assert later_b["map_75"] == 1.0 and later_a["map_75"] < 1.0
    assert later_b["map"] > later_a["map"]


def test_tied_scores_across_images_follow_image_id_order() -> None:
    """Equal scores in two images: the merged order (image id, then input order) changes AP."""
    case = {
        "det_image": np.array([7, 3, 3]),
        "det_boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], float),
        "det_scores": np.array([0.5, 0.5, 0.4]),
        "det_labels": np.array([0, 0, 0]),
        "gt_image": np.array([7, 3]),
        "gt_boxes": np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float),
        "gt_labels": np.array([0, 0]),
        "image_ids": np.array([3, 7]),
        "class_names": ["x"],
    }
    assert_matches_coco(case)
    flipped = dict(case, det_image=np.array([3, 7, 7]), gt_image=np.array([3, 7]))
    assert_matches_coco(flipped)
    assert ours(case)["map"] != ours(flipped)["map"]


def test_perfect_predictions() -> None:
    case = random_case(3)
    case.update(
        det_image=case["gt_image"],
        det_boxes=case["gt_boxes"],
        det_labels=case["gt_labels"],
        det_scores=np.random.default_rng(0).uniform(0.5, 1, len(case["gt_image"])),
    )
    m = assert_matches_coco(case)
    assert m["map"] == m["map_50"] == m["map_75"] == m["mar_100"] == 1.0
    assert m["precision"] == m["recall"] == 1.0


def test_no_detections_and_no_gt() -> None:
    case = random_case(1)
    empty = {
        "det_image": np.zeros(0, int),
        "det_boxes": np.zeros((0, 4)),
        "det_scores": np.zeros(0),
        "det_labels": np.zeros(0, int),
    }
    m = assert_matches_coco(dict(case, **empty))
    assert m["map"] == m["mar_100"] == m["ap/c0"] == m["precision"] == m["recall"] == 0.0
    assert math.isnan(m["ap/c4"]) and m["num_det"] == 0.0
    no_gt = {"gt_image": np.zeros(0, int), "gt_boxes": np.zeros((0, 4)), "gt_labels": np.zeros(0, int)}
    m = assert_matches_coco(dict(case, **no_gt))
    assert all(math.isnan(m[k]) for k in ("map", "map_50", "map_75", "mar_100", "recall", "ap/c0"))
    assert m["precision"] == 0.0 and m["num_gt"] == 0.0
    m = assert_matches_coco(dict(case, **empty, **no_gt))
    assert math.isnan(m["map"]) and m["precision"] == 0.0 and m["num_images"] == 25.0


HAND_CASE = {
    "det_image": np.array([1, 1, 1, 1, 1, 2, 3]),
    "det_boxes": np.array(
        [
            [0, 0, 10, 10],
            [1, 1, 10, 10],
            [20, 20, 30, 30],
            [0, 0, 10, 10],
            [20, 20, 30, 30],
            [0, 0, 10, 4],
            [0, 0, 5, 5],
        ],
        float,
    ),
    "det_scores": np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.95, 0.5]),
    "det_labels": np.array([0, 0, 1, 1, 0, 0, 1]),
    "gt_image": np.array([1, 1, 1, 2]),
    "gt_boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [0, 0, 10, 10]], float),
    "gt_labels": np.array([0, 0, 1, 0]),
    "image_ids": np.array([1, 2, 3, 4]),
    "class_names": ["car", "person"],
}


def test_precision_recall_hand_worked() -> None:
    """IoU 0.5, score >= threshold, greedy by score per image and class, each GT matched once.

    image 1: GT a=[0,0,10,10] car, b=[20,20,30,30] car, c=[0,0,10,10] person
      0.90 car == a           -> TP
      0.80 car [1,1,10,10]    -> IoU .81 with a, but a is taken -> FP
      0.70 person == b        -> wrong class -> FP
      0.60 person == c        -> TP
      0.30 car == b           -> below 0.5, not counted
    image 2: GT [0,0,10,10] car; 0.95 car [0,0,10,4] -> IoU 0.4 -> FP
    image 3: no GT; 0.50 person [0,0,5,5] -> FP (score == threshold counts)
    image 4: nothing.
    threshold 0.5: TP 2 of 6 detections -> precision 1/3; 2 of 4 GT -> recall 1/2.
    threshold 0.2: the 0.30 det of b joins as TP -> precision 3/7, recall 3/4.
    """
    m = ours(HAND_CASE)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(0.5)
    assert (m["num_images"], m["num_gt"], m["num_det"]) == (4.0, 4.0, 7.0)
    low = ours(HAND_CASE, score_threshold=0.2)
    assert low["precision"] == pytest.approx(3 / 7) and low["recall"] == pytest.approx(0.75)
    # The threshold does not touch the COCO numbers, which also match pycocotools here.
    assert low["map"] == m["map"]
    assert_matches_coco(HAND_CASE)


def test_input_validation_and_filtering() -> None:
    case = tie_case(False)
    with pytest.raises(ValueError):
        ours(dict(case, det_labels=np.array([0, 1])))
    # Boxes of images outside image_ids are left out, like pycocotools' params.imgIds.
    extra = dict(case, det_image=np.array([1, 9]), gt_image=np.array([1, 9]))
    m = ours(extra)
    assert (m["num_gt"], m["num_det"]) == (1.0, 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_map_over_resampled_videos_equals_map_of_the_copied_images(seed: int) -> None:
    """The promotion floor's bootstrap statistic: mAP of a multiset of videos (a video drawn twice brings its
    images twice) equals detection_metrics on that set of images built explicitly, tied scores included."""
    from vt_models.eval.detection_metrics import map_over_videos, match_detections

    case = random_case(seed)
    names = case.pop("class_names")
    order = np.sort(case["image_ids"])
    video_of_image = np.arange(len(order)) // 5  # 5 videos of 5 images, in image id order
    statistic = map_over_videos(match_detections(**case, class_names=names), video_of_image)
    assert statistic(np.arange(5)) == detection_metrics(**case, class_names=names)["map"]

    draw = np.array([3, 3, 0, 4, 3])  # video 3 three times, videos 1 and 2 not at all
    rank = {int(im): r for r, im in enumerate(order)}
    parts: dict[str, list] = {k: [] for k in case}
    for j, v in enumerate(draw):
        for im in order[video_of_image == v]:
            new_id = j * len(order) + rank[int(im)]  # distinct images, draw order first (the statistic's ids)
            d, g = case["det_image"] == im, case["gt_image"] == im
            parts["det_image"].append(np.full(d.sum(), new_id)), parts["gt_image"].append(np.full(g.sum(), new_id))
            for key in ("det_boxes", "det_scores", "det_labels"):
                parts[key].append(case[key][d])
            for key in ("gt_boxes", "gt_labels"):
                parts[key].append(case[key][g])
            parts["image_ids"].append(np.array([new_id]))
    copied = {k: np.concatenate(v) for k, v in parts.items()}
    expected = detection_metrics(**copied, class_names=names)["map"]
    assert statistic(draw) == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(statistic(np.arange(5)), abs=1e-6), "the resample must change the score"


def test_map_over_videos_without_ground_truth_counts_zero() -> None:
    from vt_models.eval.detection_metrics import map_over_videos, match_detections

    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    m = match_detections(
        np.array([1, 2]),
        np.vstack([box, box]),
        np.array([0.9, 0.8]),
        np.array([0, 0]),
        np.array([1]),
        box,
        np.array([0]),
        np.array([1, 2]),
        ["a"],
    )
    statistic = map_over_videos(m, np.array([0, 1]))
    assert statistic(np.array([0])) == pytest.approx(1.0) and statistic(np.array([1, 1])) == 0.0
    assert statistic(np.array([0, 1])) == pytest.approx(
        detection_metrics(
            np.array([1, 2]),
            np.vstack([box, box]),
            np.array([0.9, 0.8]),
            np.array([0, 0]),
            np.array([1]),
            box,
            np.array([0]),
            np.array([1, 2]),
            ["a"],
        )["map"]
    )
