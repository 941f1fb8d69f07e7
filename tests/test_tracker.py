"""ByteTrack-style ``vt_models.track.tracker`` on synthetic detections."""

from __future__ import annotations

import numpy as np

from vt_models.config import TrackerConfig
from vt_models.eval.mot import mot_metrics, tracks_to_frames
from vt_models.track.tracker import FrameDetections, TrackedBox, Tracker, track_video, untracked

Det = tuple[list[float], float, int]  # (xyxy box, score, label)


def frame(*dets: Det) -> FrameDetections:
    if not dets:
        return FrameDetections.empty()
    return FrameDetections(
        np.array([d[0] for d in dets]), np.array([d[1] for d in dets]), np.array([d[2] for d in dets])
    )


def box(x: float, y: float, size: float = 40) -> list[float]:
    return [x, y, x + size, y + size]


def center(b: np.ndarray | list[float]) -> np.ndarray:
    b = np.asarray(b)
    return (b[:2] + b[2:]) / 2


def nearest(out: list[TrackedBox], b: list[float]) -> TrackedBox:
    return min(out, key=lambda t: np.linalg.norm(center(t.box) - center(b)))


def crossing(gap: range, n: int = 50, seed: int = 0) -> tuple[list[FrameDetections], list, list[list[float]]]:
    """A moves right, B moves left 15 px lower and crosses it; A's detection is missing in ``gap``."""
    rng = np.random.default_rng(seed)
    frames, gt, a_true = [], [], []
    for t in range(n):
        a, b = box(10 + 3 * t, 100), box(200 - 3 * t, 115)
        a_true.append(a)
        dets = [(list(np.add(b, rng.normal(0, 0.5, 4))), 0.9, 0)]
        if t not in gap:
            dets.insert(0, (list(np.add(a, rng.normal(0, 0.5, 4))), 0.9, 0))
        frames.append(frame(*dets))
        gt.append((np.array([1, 2]), np.array([a, b])))
    return frames, gt, a_true


def test_id_kept_through_short_occlusion_while_another_object_crosses() -> None:
    gap = range(29, 33)  # 4 frames, around where B passes A (they cross at t ~ 32)
    frames, gt, a_true = crossing(gap)
    out = track_video(frames, TrackerConfig(max_age=8, min_hits=2))
    a_ids = {nearest(out[t], a_true[t]).track_id for t in range(1, len(frames))}
    assert len(a_ids) == 1
    a_id = a_ids.pop()
    for t in gap:
        a = next(tb for tb in out[t] if tb.track_id == a_id)
        assert a.predicted and np.linalg.norm(center(a.box) - center(a_true[t])) < 3
    assert not any(tb.predicted for t in range(len(frames)) if t not in gap for tb in out[t])
    m = mot_metrics(gt, tracks_to_frames(out))
    assert m["id_switches"] == 0 and m["false_positives"] == 0 and m["misses"] == 2  # frame 0: min_hits


def test_id_changes_after_gap_longer_than_max_age() -> None:
    cfg = TrackerConfig(max_age=8, min_hits=2)
    gap = range(10, 22)
    frames = [frame() if t in gap else frame((box(10 + 3 * t, 100), 0.9, 0)) for t in range(30)]
    out = track_video(frames, cfg)
    assert [len(out[t]) for t in gap] == [1] * cfg.max_age + [0] * (len(gap) - cfg.max_age)
    assert all(tb.predicted for t in gap for tb in out[t])
    before, after = out[9][0].track_id, out[23][0].track_id
    assert before != after
    assert out[22] == []  # the new track is tentative in its first frame


def test_low_score_detections_extend_but_never_start_tracks() -> None:
    frames = []
    for t in range(15):
        score = 0.9 if t < 5 else 0.3  # A fades to low scores (e.g. partial occlusion)
        dets = [(box(10 + 2 * t, 10), score, 0), (box(150, 150 + t), 0.3, 0)]  # B is only ever weak
        if t == 14:
            dets[0] = (dets[0][0], 0.05, 0)  # below low_score: ignored
        frames.append(frame(*dets))
    out = track_video(frames, TrackerConfig(high_score=0.5, low_score=0.1, min_hits=2))
    assert all(len(o) == 1 for o in out[1:]) and out[0] == []
    assert {o[0].track_id for o in out[1:]} == {1}
    assert [o[0].predicted for o in out[1:]] == [False] * 13 + [True]
    assert all(center(o[0].box)[1] < 100 for o in out[1:])  # never B


def test_one_frame_false_positive_never_reported_and_min_hits() -> None:
    frames = [frame((box(10 + 2 * t, 10), 0.9, 0)) for t in range(20)]
    frames[10] = frame((box(30, 10), 0.9, 0), (box(200, 200), 0.95, 0))
    out = track_video(frames, TrackerConfig(min_hits=3))
    assert [len(o) for o in out] == [0, 0] + [1] * 18
    assert {tb.track_id for o in out for tb in o} == {1}


def test_tracking_beats_per_frame_detections() -> None:
    rng = np.random.default_rng(3)
    n, k = 60, 5
    start = rng.uniform(0, 300, (k, 2))
    vel = rng.uniform(-2, 2, (k, 2))
    frames, gt = [], []
    for t in range(n):
        xy = start + vel * t
        g = np.concatenate([xy, xy + 40], axis=1)
        gt.append((np.arange(1, k + 1), g))
        seen = rng.random(k) > 0.2  # dropped detections
        scores = np.where(rng.random(k) < 0.2, rng.uniform(0.2, 0.5, k), rng.uniform(0.6, 0.95, k))[seen]
        boxes = g[seen] + rng.normal(0, 1.5, (int(seen.sum()), 4))
        n_fp = rng.poisson(0.4)
        fp_xy = rng.uniform(0, 340, (n_fp, 2))
        boxes = np.concatenate([boxes, np.concatenate([fp_xy, fp_xy + 30], axis=1)])
        scores = np.concatenate([scores, rng.uniform(0.5, 0.8, n_fp)])
        frames.append(FrameDetections(boxes, scores, np.zeros(len(scores), np.int64)))
    cfg = TrackerConfig()
    tracked = mot_metrics(gt, tracks_to_frames(track_video(frames, cfg)))
    baseline = mot_metrics(gt, tracks_to_frames(untracked(frames, cfg.high_score)))
    assert tracked["mota"] > baseline["mota"] + 0.2
    assert tracked["idf1"] > baseline["idf1"] + 0.3
    # fresh ids every frame leave per-frame detections almost no association (AssA ~0.02 here)
    assert tracked["hota"] > baseline["hota"] + 0.5 and tracked["assa"] > baseline["assa"] + 0.5
    assert tracked["id_switches"] < baseline["id_switches"] / 5
    assert tracked["misses"] < baseline["misses"]


def test_label_is_score_weighted_majority() -> None:
    labels = [1, 1, 1, 2, 1, 1, 1]
    out = track_video([frame((box(10 + t, 10), 0.8, lab)) for t, lab in enumerate(labels)])
    assert [o[0].label for o in out[1:]] == [1] * 6
    # a confident new class outvotes one early weak vote
    seq = [(3, 0.3)] + [(5, 0.9)] * 3
    out = track_video([frame((box(10, 10), s, lab)) for lab, s in seq], TrackerConfig(low_score=0.1, high_score=0.25))
    assert [o[0].label for o in out[1:]] == [5, 5, 5]


def test_box_smoothing() -> None:
    rng = np.random.default_rng(0)
    truth = [box(10 + 3 * t, 10 + t) for t in range(60)]
    raw = [list(np.add(b, rng.normal(0, 2, 4))) for b in truth]  # jitter around a straight path
    frames = [frame((b, 0.9, 0)) for b in raw]
    exact = track_video(frames, TrackerConfig(box_smoothing=0.0, min_hits=1))
    assert all(np.allclose(o[0].box, b) for o, b in zip(exact, raw, strict=True))

    def err(out: list[list[TrackedBox]]) -> float:
        return float(np.mean([np.abs(o[0].box - b).mean() for o, b in zip(out[10:], truth[10:], strict=True)]))

    assert err(track_video(frames, TrackerConfig(box_smoothing=0.5, min_hits=1))) < 0.8 * err(exact)


def test_untracked_and_tracker_api() -> None:
    frames = [frame((box(0, 0), 0.9, 2), (box(100, 0), 0.3, 1))] * 3
    base = untracked(frames, 0.5)
    assert [[tb.track_id for tb in o] for o in base] == [[1], [2], [3]]
    tracker = Tracker(TrackerConfig(min_hits=1))
    assert [tb.track_id for tb in tracker.update(frames[0])] == [1]
    assert tracker.update(FrameDetections.empty())[0].predicted


def test_a_shrinking_track_extrapolated_through_a_gap_keeps_a_valid_box() -> None:
    # the box loses 6 px a side per frame, then goes unmatched: its extrapolation must not turn inside out
    tracker = Tracker(TrackerConfig(min_hits=1, max_age=10, box_smoothing=0.0))
    for t in range(4):
        tracker.update(frame(([50 + 6 * t, 50 + 6 * t, 110 - 6 * t, 110 - 6 * t], 0.9, 0)))
    for _ in range(10):
        out = tracker.update(frame())
        assert len(out) == 1 and out[0].predicted
        x1, y1, x2, y2 = out[0].box
        assert x2 - x1 >= 1.0 and y2 - y1 >= 1.0
        assert abs((x1 + x2) / 2 - 80) < 1e-6  # it shrinks about its centre
