"""The tracking-metric adapters (``vt_models.eval.mot``): our xyxy boxes, IoU threshold and names give what
motmetrics gives on its own xywh boxes and IoU distance, and the HOTA that TrackEval's own MOTChallenge
evaluation gives from MOT text files, on random tracking scenarios; pooling over videos."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import motmetrics as mm
import numpy as np
import pytest
import trackeval

from vt_models.boxes import xyxy_to_xywh
from vt_models.eval.mot import HOTA_NAMES, NAMES, accumulate, mot_metrics, summarise, tracks_to_frames
from vt_models.track.tracker import TrackedBox

# ours -> motmetrics' name: the adapter's own table (the by-hand tests below pin what the names mean)
PAIRS = NAMES


@pytest.fixture(autouse=True)
def _motmetrics_on_numpy2(monkeypatch: pytest.MonkeyPatch) -> None:
    # motmetrics 1.4's iou_matrix calls np.asfarray, removed in numpy 2; patched for these tests only.
    if not hasattr(np, "asfarray"):
        monkeypatch.setattr(np, "asfarray", lambda a, dtype=float: np.asarray(a, dtype=dtype), raising=False)


def reference(gt: list, pred: list, iou_threshold: float = 0.5) -> dict[str, float]:
    acc = mm.MOTAccumulator(auto_id=True)
    for (gi, gb), (pi, pb) in zip(gt, pred, strict=True):
        acc.update(
            list(gi), list(pi), mm.distances.iou_matrix(xyxy_to_xywh(gb), xyxy_to_xywh(pb), max_iou=1 - iou_threshold)
        )
    df = mm.metrics.create().compute(acc, metrics=list(PAIRS.values()))
    return {ours: float(df[theirs].iloc[0]) for ours, theirs in PAIRS.items()}


def scenario(seed: int) -> tuple[list, list]:
    """GT tracks moving over 30-60 frames; hypotheses with drops, jitter, id swaps, new ids, FPs, empty frames."""
    rng = np.random.default_rng(seed)
    n_frames = int(rng.integers(30, 61))
    n_obj = int(rng.integers(2, 7))
    start = rng.integers(0, n_frames // 2, n_obj)
    end = np.minimum(n_frames, start + rng.integers(5, n_frames, n_obj))
    pos = rng.uniform(0, 200, (n_obj, 2))
    size = rng.uniform(15, 50, (n_obj, 2))
    vel = rng.normal(0, 3, (n_obj, 2))
    hyp_id = np.arange(n_obj) + 100  # each object's current hypothesis id
    next_id = 200
    drop, jitter, fp_rate = rng.uniform(0, 0.3), rng.uniform(0.5, 6), rng.uniform(0, 1.5)
    blank = set(rng.choice(n_frames, size=3, replace=False).tolist())
    gt, pred = [], []
    for t in range(n_frames):
        if rng.random() < 0.05 and n_obj >= 2:  # two hypotheses swap their objects
            a, b = rng.choice(n_obj, 2, replace=False)
            hyp_id[[a, b]] = hyp_id[[b, a]]
        if rng.random() < 0.05:  # an object's hypothesis restarts with a fresh id
            hyp_id[rng.integers(n_obj)] = next_id
            next_id += 1
        alive = np.flatnonzero((start <= t) & (t < end))
        if t in blank:
            alive = alive[:0]
        xy = pos[alive] + vel[alive] * t
        g_boxes = np.concatenate([xy, xy + size[alive]], axis=1)
        seen = rng.random(len(alive)) >= drop
        p_boxes = g_boxes[seen] + rng.normal(0, jitter, (int(seen.sum()), 4))
        p_ids = hyp_id[alive[seen]]
        n_fp = rng.poisson(fp_rate) if t not in blank or rng.random() < 0.5 else 0
        fp_xy = rng.uniform(0, 250, (n_fp, 2))
        p_boxes = np.concatenate([p_boxes, np.concatenate([fp_xy, fp_xy + rng.uniform(10, 50, (n_fp, 2))], axis=1)])
        p_ids = np.concatenate([p_ids, np.arange(next_id, next_id + n_fp)])
        next_id += n_fp
        g_order, p_order = rng.permutation(len(alive)), rng.permutation(len(p_ids))
        gt.append((alive[g_order] + 1, g_boxes[g_order]))
        pred.append((p_ids[p_order], p_boxes[p_order]))
    return gt, pred


def assert_same(ours: dict[str, float], ref: dict[str, float]) -> None:
    for k, v in ref.items():
        assert (math.isnan(v) and math.isnan(ours[k])) or math.isclose(ours[k], v, rel_tol=0, abs_tol=1e-9), (
            k,
            ours[k],
            v,
        )


@pytest.mark.parametrize("seed", range(8))
def test_matches_motmetrics_random(seed: int) -> None:
    gt, pred = scenario(seed)
    ours, ref = mot_metrics(gt, pred), reference(gt, pred)
    assert ref["id_switches"] + ref["false_positives"] + ref["misses"] > 0  # the scenario is not trivial
    assert_same(ours, ref)


def test_matches_motmetrics_other_threshold() -> None:
    gt, pred = scenario(11)
    assert_same(mot_metrics(gt, pred, iou_threshold=0.3), reference(gt, pred, iou_threshold=0.3))


def box(x: float, y: float, w: float = 10, h: float = 10) -> list[float]:
    return [x, y, x + w, y + h]


def test_previous_correspondence_kept_before_hungarian() -> None:
    # Frame 2: hypothesis 8 fits object 1 better, but 7 (its partner in frame 1) still overlaps
    # enough, so the match is kept: no ID switch, 8 is a false positive.
    gt = [(np.array([1]), np.array([box(0, 0)]))] * 2
    pred = [
        (np.array([7]), np.array([box(1, 0)])),
        (np.array([7, 8]), np.array([box(2, 0), box(0, 0)])),
    ]
    m = mot_metrics(gt, pred)
    assert (m["id_switches"], m["false_positives"], m["num_matches"]) == (0, 1, 2)
    assert_same(m, reference(gt, pred))


def test_max_cardinality_before_min_cost() -> None:
    # o1-h1 is the single best pair (IoU 0.9), but o1-h2 + o2-h1 (IoU 0.6 each) matches both
    # objects; motmetrics' matching takes the larger matching first.
    s = 10 * 0.1 / 1.9  # a shift giving IoU 0.9 for 10x10 boxes
    gt = [(np.array([1, 2]), np.array([box(0, 0), box(s + 2.5, 0)]))]
    pred = [(np.array([7, 8]), np.array([box(s, 0), box(-2.5, 0)]))]
    m = mot_metrics(gt, pred)
    assert m["num_matches"] == 2 and m["misses"] == 0
    assert_same(m, reference(gt, pred))


def test_id_switch_and_idf1_by_hand() -> None:
    # Object 1 is hypothesis 7 for 3 frames, then 9 for 1 frame: 1 switch; IDF1 = 2*3 / (4+4).
    gt = [(np.array([1]), np.array([box(0, 0)]))] * 4
    pred = [(np.array([7]), np.array([box(0, 0)]))] * 3 + [(np.array([9]), np.array([box(0, 0)]))]
    m = mot_metrics(gt, pred)
    assert m["id_switches"] == 1 and m["mota"] == pytest.approx(0.75) and m["idf1"] == pytest.approx(0.75)
    assert m["motp"] == 0 and m["mostly_tracked"] == 1
    # HOTA at every alpha (the boxes are exact): all 4 detections match, DetA = 1; the 3 matches of
    # (1, 7) have association IoU 3 / (4 + 3 - 3), the 1 match of (1, 9) has 1 / (4 + 1 - 1), so
    # AssA = (3 * 3/4 + 1 * 1/4) / 4 = 5/8 and HOTA = sqrt(DetA * AssA).
    assert m["deta"] == 1.0 and m["assa"] == pytest.approx(5 / 8) and m["hota"] == pytest.approx(math.sqrt(5 / 8))


def test_perfect_tracking_has_hota_one() -> None:
    gt, _ = scenario(2)
    pred = [(ids + 1000, boxes.copy()) for ids, boxes in gt]  # other id values, same tracks
    m = mot_metrics(gt, pred)
    assert m["hota"] == m["deta"] == m["assa"] == 1.0
    assert m["mota"] == m["idf1"] == 1.0


def test_identity_switch_lowers_association_not_detection() -> None:
    """Two objects' hypotheses swap halfway: every box is still found (DetA and MOTA's detection part
    unchanged), but HOTA, AssA and IDF1 drop."""
    gt, _ = scenario(6)
    perfect = [(ids + 1000, boxes.copy()) for ids, boxes in gt]
    half = len(gt) // 2
    a, b = 1, 2  # two GT objects alive across the swap
    assert all({a, b} <= set(ids.tolist()) for ids, _ in gt[half - 1 : half + 1])
    swapped = [
        (np.where(ids == 1000 + a, 1000 + b, np.where(ids == 1000 + b, 1000 + a, ids)) if t >= half else ids, boxes)
        for t, (ids, boxes) in enumerate(perfect)
    ]
    good, bad = mot_metrics(gt, perfect), mot_metrics(gt, swapped)
    assert bad["deta"] == good["deta"] == 1.0
    assert bad["assa"] < good["assa"] and bad["hota"] < good["hota"] and bad["idf1"] < good["idf1"]
    assert bad["id_switches"] == 2


def trackeval_reference(videos: list[tuple[list, list]], folder: Path) -> dict[str, dict[str, float]]:
    """HOTA from TrackEval's own MOTChallenge evaluation: MOT text files (xywh), its loader, IoU, id relabelling
    and pooling; per video (``v0``, ``v1``, ...) and ``COMBINED_SEQ``."""
    seq_info = {}
    for v, (gt, pred) in enumerate(videos):
        name = f"v{v}"
        seq_info[name] = len(gt)
        for path, frames, extra in (
            (folder / "gt" / name / "gt" / "gt.txt", gt, [1, 1, 1]),  # not zero-marked, pedestrian, visible
            (folder / "trackers" / "ours" / "data" / f"{name}.txt", pred, [1]),  # confidence
        ):
            rows = [
                [t + 1, i, *b, *extra]
                for t, (ids, boxes) in enumerate(frames)
                for i, b in zip(ids, xyxy_to_xywh(boxes), strict=True)
            ]
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(path, np.array(rows, float).reshape(-1, 6 + len(extra)), fmt="%.17g", delimiter=",")
    quiet = {"PRINT_CONFIG": False}
    dataset = trackeval.datasets.MotChallenge2DBox(
        {
            **quiet,
            "GT_FOLDER": str(folder / "gt"),
            "TRACKERS_FOLDER": str(folder / "trackers"),
            "SKIP_SPLIT_FOL": True,
            "SEQ_INFO": seq_info,
        }
    )
    evaluator = trackeval.Evaluator(
        {
            **quiet,
            "PRINT_RESULTS": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "LOG_ON_ERROR": None,
        }
    )
    with contextlib.redirect_stdout(io.StringIO()):
        res, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA()])
    per_seq = res["MotChallenge2DBox"]["ours"]
    return {
        seq: {ours: float(np.mean(r["pedestrian"]["HOTA"][theirs])) for ours, theirs in HOTA_NAMES.items()}
        for seq, r in per_seq.items()
    }


def test_hota_equals_trackeval_motchallenge_evaluation(tmp_path: Path) -> None:
    videos = [scenario(s) for s in (7, 8, 9)]
    ref = trackeval_reference(videos, tmp_path)
    per_video = [accumulate(g, p) for g, p in videos]
    for v, seq in enumerate(per_video):
        assert_same(summarise([seq]), ref[f"v{v}"])
    pooled = summarise(per_video)
    assert_same(pooled, ref["COMBINED_SEQ"])
    assert 0.2 < pooled["hota"] < 0.95 and pooled["assa"] != pooled["deta"]  # not a degenerate case


def test_empty_and_validation() -> None:
    empty = (np.zeros(0, np.int64), np.zeros((0, 4)))
    m = mot_metrics([empty] * 3, [empty] * 3)
    assert m["num_gt"] == 0 and math.isnan(m["motp"]) and math.isnan(m["idf1"])
    assert m["hota"] == 0.0  # TrackEval's value without any box
    with pytest.raises(ValueError):
        mot_metrics([empty], [])
    twice = (np.array([3, 3]), np.array([box(0, 0), box(20, 0)]))
    with pytest.raises(ValueError, match="twice"):
        mot_metrics([twice], [empty])


def test_tracks_to_frames() -> None:
    tracked = [[TrackedBox(3, np.array(box(0, 0), float), 0.9, 1, False)], []]
    frames = tracks_to_frames(tracked)
    assert frames[0][0].tolist() == [3] and frames[0][1].shape == (1, 4)
    assert frames[1][0].shape == (0,) and frames[1][1].shape == (0, 4)


def test_pooling_over_videos_sums_the_counts() -> None:
    videos = [scenario(s) for s in (3, 4, 5)]
    per_video = [mot_metrics(g, p) for g, p in videos]
    pooled = summarise([accumulate(g, p) for g, p in videos])
    for key in ("num_gt", "num_pred", "misses", "false_positives", "id_switches", "num_matches", "num_gt_tracks"):
        assert pooled[key] == sum(m[key] for m in per_video), key
    errors = pooled["misses"] + pooled["false_positives"] + pooled["id_switches"]
    assert pooled["mota"] == pytest.approx(1 - errors / pooled["num_gt"])
    idtp = sum(m["idr"] * m["num_gt"] for m in per_video)  # IDF1's assignment is per video, then pooled
    assert pooled["idf1"] == pytest.approx(2 * idtp / (pooled["num_gt"] + pooled["num_pred"]))
    assert all(math.isnan(v) for v in summarise([]).values())
