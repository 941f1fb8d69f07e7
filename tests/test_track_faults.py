"""Injected faults (``vt_models.track.faults``) and ``vt bench track`` on tiny real data."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vt_models.boxes import iou_matrix
from vt_models.config import TrackerConfig
from vt_models.detect.evaluate import mot_scores, tracking_metrics
from vt_models.track.faults import add_low_score_noise, detections_from_gt, drop_runs
from vt_models.track.reference import bytetrack_reference
from vt_models.track.tracker import FrameDetections

BIN = Path(__import__("sys").executable).parent


def walkers(n: int = 40, objects: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """GT tracks 1..objects moving right at 2 px per frame, 60 px apart vertically."""
    return [
        (np.arange(1, objects + 1), np.array([[10 + 2 * t, 60 * i, 40 + 2 * t, 60 * i + 30] for i in range(objects)]))
        for t in range(n)
    ]


def exact(gt: list[tuple[np.ndarray, np.ndarray]]) -> list[FrameDetections]:
    return [FrameDetections(b, np.full(len(b), 0.9), np.zeros(len(b), np.int64)) for _, b in gt]


def test_drop_runs_removes_each_track_for_k_consecutive_frames_inside_its_life() -> None:
    gt = walkers()
    dropped = drop_runs(exact(gt), gt, 4, np.random.default_rng(0))
    for track in (1, 2, 3):
        y = 60 * (track - 1)
        missing = [t for t, f in enumerate(dropped) if not np.any(f.boxes[:, 1] == y)]
        # exactly 4 frames in a row, seen before and after them: a gap a tracker can bridge
        assert missing == list(range(missing[0], missing[0] + 4)) and 0 < missing[0] and missing[-1] < len(gt) - 1
    assert sum(len(f) for f in dropped) == 3 * len(gt) - 12
    short = walkers(n=5)  # 5 frames < k + 2: nothing to bridge, nothing dropped
    assert sum(len(f) for f in drop_runs(exact(short), short, 4, np.random.default_rng(0))) == 15
    assert drop_runs([], [], 3, np.random.default_rng(0)) == []
    with pytest.raises(ValueError, match="k must be >= 1"):
        drop_runs(exact(gt), gt, 0, np.random.default_rng(0))


def test_low_score_noise_adds_boxes_between_the_thresholds_and_keeps_the_detections() -> None:
    gt = walkers(n=400)
    noisy = add_low_score_noise(exact(gt), gt, 2.0, 0.1, 0.5, np.random.default_rng(1))
    added = [f.scores[3:] for f in noisy]
    assert all(np.array_equal(f.boxes[:3], b) for f, (_, b) in zip(noisy, gt, strict=True))
    assert np.mean([len(a) for a in added]) == pytest.approx(2.0, abs=0.2)
    scores = np.concatenate(added)
    assert scores.min() >= 0.1 and scores.max() < 0.5
    boxes = np.concatenate([f.boxes[3:] for f in noisy])
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    # every added box is a false one: none covers an object of its frame
    assert all(iou_matrix(b, f.boxes[3:]).max(initial=0) < 0.5 for f, (_, b) in zip(noisy, gt, strict=True))


def test_detections_from_gt_jitter_and_score() -> None:
    gt = walkers(n=200)
    dets = detections_from_gt(gt, 2.0, 0.9, np.random.default_rng(2))
    diff = np.concatenate([d.boxes - b for d, (_, b) in zip(dets, gt, strict=True)])
    assert diff.std() == pytest.approx(2.0, rel=0.1) and all((d.scores == 0.9).all() for d in dets)


def test_the_tracker_bridges_occlusions_and_ignores_low_score_noise() -> None:
    gt = walkers()
    rng = np.random.default_rng(3)
    clean = detections_from_gt(gt, 1.0, 0.9, rng)
    occluded = drop_runs(clean, gt, 3, rng)
    noisy = add_low_score_noise(clean, gt, 2.0, 0.1, 0.5, rng)
    tracker = TrackerConfig(max_age=4, min_hits=2)
    occ = tracking_metrics([(occluded, gt)], tracker)
    # per-frame detections get a new id every frame (IDF1 ~ 0); the tracker keeps each object's id through
    # its 3 missing frames
    assert occ["tracked"]["idf1"] > 0.9 > 0.1 > occ["untracked"]["idf1"]
    clean_mot = tracking_metrics([(clean, gt)], tracker)
    assert occ["tracked"]["id_switches"] == 0 and occ["tracked"]["mota"] > clean_mot["tracked"]["mota"] - 0.1
    # boxes under high_score never start a track: the same figures as without the noise
    with_noise, without = tracking_metrics([(noisy, gt)], tracker), clean_mot
    assert with_noise["tracked"]["mota"] == pytest.approx(without["tracked"]["mota"], abs=0.02)
    assert with_noise["tracked"]["idf1"] == pytest.approx(without["tracked"]["idf1"], abs=0.02)


def test_reference_bytetrack_keeps_ids_and_drops_low_score_boxes() -> None:
    gt = walkers()
    clean = detections_from_gt(gt, 1.0, 0.9, np.random.default_rng(4))
    tracked = bytetrack_reference(clean, TrackerConfig(min_hits=2))
    assert not tracked[0] and all(len(frame) == 3 for frame in tracked[1:])  # reported from the 2nd match on
    assert len({t.track_id for frame in tracked for t in frame}) == 3
    assert mot_scores([(clean, gt)], lambda d: bytetrack_reference(d, TrackerConfig()))["idf1"] > 0.9
    # confirmed tracks, then boxes scored 0.05: its second stage would extend the tracks with them, unless they
    # are under low_score, which ours ignores and the adapter drops
    faint = clean[:5] + [FrameDetections(f.boxes, np.full(len(f), 0.05), f.labels) for f in clean[5:10]]
    assert [len(f) for f in bytetrack_reference(faint, TrackerConfig(low_score=0.01))[5:]] == [3] * 5
    assert not any(bytetrack_reference(faint, TrackerConfig(low_score=0.1))[5:])


def test_bench_track_cli_on_simulated_detections_and_errors(tiny_project: Path) -> None:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    res = subprocess.run(
        [str(BIN / "vt"), "bench", "track", "--from-gt", "--occlusion", "2", "--out", "track.json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    figures = json.loads(Path("track.json").read_text())
    scenarios = figures["scenarios"]
    assert list(scenarios) == [
        "clean",
        "occlusion: 2 frames per track",
        "low-score noise: 1 per frame",
        "occlusion + noise",
    ]
    for s in scenarios.values():
        assert s["tracked"]["videos"] == s["reference"]["videos"] == s["untracked"]["videos"] > 0
    assert scenarios["clean"]["reference"]["idf1"] > scenarios["clean"]["untracked"]["idf1"]
    clean, occluded = scenarios["clean"], scenarios["occlusion: 2 frames per track"]
    assert clean["tracked"]["idf1"] > clean["untracked"]["idf1"]
    assert occluded["tracked"]["idf1"] > occluded["untracked"]["idf1"]
    rows = figures["sweep"]["rows"]
    configured = {k: figures["tracker"][k] for k in ("match_iou", "max_age", "min_hits")}  # on the sweep's grid
    assert len(rows) == 27 and sum(all(r[k] == v for k, v in configured.items()) for r in rows) == 1
    assert figures["reference"].startswith("trackers ")
    assert "sweep on 'occlusion + noise'" in res.stdout and "simulated" in res.stdout

    res = subprocess.run(
        [str(BIN / "vt"), "bench", "track", "-d", "fcos_resnet50_fpn"], env=env, capture_output=True, text=True
    )
    assert res.returncode != 0 and "vt detect train -d fcos_resnet50_fpn" in res.stderr
