""" "Does it look at motion?": the motion probes of every evaluation (static, reversed, shuffled clips)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from vt_models.classify.data import make_clip
from vt_models.classify.motion import motion_warning, perturb
from vt_models.config import DEFAULT_REVERSE_PAIRS, EvaluateConfig, load_config
from vt_models.data.modality import MemoryFrames, compute_flow, normalisation, reverse_label_map
from vt_models.models.transforms import ClipTransform


def square_moving_left(n: int = 8, size: int = 48, step: int = 2) -> np.ndarray:
    """A checkered square moving ``step`` px per frame to the left over a flat grey background."""
    frames = np.full((n, size, size, 3), 60, np.uint8)
    patch = np.kron(np.indices((3, 3)).sum(0) % 2, np.ones((4, 4), np.int64)).astype(bool)  # 12x12 checkerboard
    for t in range(n):
        x = size - 14 - t * step
        frames[t, 18:30, x : x + 12][patch] = (240, 240, 240)
        frames[t, 18:30, x : x + 12][~patch] = (140, 40, 40)
    return frames


def mean_x_flow(frames: np.ndarray) -> float:
    """Mean horizontal flow (pixels) over the rows the square crosses, from the 8-bit flow."""
    q = compute_flow(frames)[:, 18:30, :, 0].astype(np.float32)
    return float(((q - 127.5) / 127.5 * 16.0).mean())


def flow_transform(crop: int = 32) -> ClipTransform:
    mean, std = normalisation("flow")
    return ClipTransform(mean, std, crop, train=False, resize_ratio=1.0, modality="flow")


def test_reverse_label_map_swaps_pairs_and_keeps_the_rest() -> None:
    classes = ["left", "right", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out", "wave"]
    assert reverse_label_map(classes, DEFAULT_REVERSE_PAIRS).tolist() == [1, 0, 3, 2, 5, 4, 6]
    # a pair whose partner is not a class here is ignored: the tiny data set has zoom_in without zoom_out
    assert reverse_label_map(["left", "right", "zoom_in"], DEFAULT_REVERSE_PAIRS).tolist() == [1, 0, 2]
    assert reverse_label_map(["right", "left"], [("left", "right")]).tolist() == [1, 0]
    assert reverse_label_map(["a", "b"], []).tolist() == [0, 1]
    with pytest.raises(ValueError, match="more than one"):
        reverse_label_map(["a", "b", "c"], [("a", "b"), ("b", "c")])
    with pytest.raises(ValueError, match="more than one"):
        EvaluateConfig(reverse_pairs=[("a", "b"), ("c", "a")])
    assert EvaluateConfig().reverse_pairs == list(DEFAULT_REVERSE_PAIRS) and EvaluateConfig().motion_probes is True


def test_perturbations_of_the_frame_sequence() -> None:
    frames = np.arange(7)[:, None, None, None] * np.ones((7, 2, 2, 3), np.uint8)
    ids = lambda f: f[:, 0, 0, 0].tolist()  # noqa: E731
    assert ids(perturb(frames, "static")) == [3] * 7
    assert ids(perturb(frames, "reversed")) == [6, 5, 4, 3, 2, 1, 0]
    shuffled = ids(perturb(frames, "shuffled", np.random.default_rng(0)))
    assert sorted(shuffled) == list(range(7)) and shuffled != list(range(7))
    assert shuffled == ids(perturb(frames, "shuffled", np.random.default_rng(0))), "seeded"
    with pytest.raises(ValueError, match="unknown motion probe"):
        perturb(frames, "upside_down")


def test_a_reversed_left_clip_moves_right_and_a_static_clip_has_no_motion() -> None:
    left = square_moving_left()
    assert mean_x_flow(left) < -0.1, "the synthetic clip moves left"
    assert mean_x_flow(perturb(left, "reversed")) > 0.1, "played backwards it moves right"
    # the model input, made by the one clip recipe from the perturbed frames: flow recomputed
    tf = flow_transform()
    forward = make_clip(MemoryFrames(left), tf, clip_len=4, train=False)
    backward = make_clip(MemoryFrames(perturb(left, "reversed")), tf, clip_len=4, train=False)
    assert forward.shape == (2, 4, 32, 32)
    assert forward[0].mean() < -0.05 < 0.05 < backward[0].mean()
    static = make_clip(MemoryFrames(perturb(left, "static")), tf, clip_len=4, train=False)
    # zero flow, up to the 8-bit store's half level (128 is "no motion", 127.5 the true zero)
    half_level = 0.5 / 127.5 / normalisation("flow")[1][0]
    assert float(static.abs().max()) <= half_level + 1e-6
    assert float(forward.abs().max()) > 10 * half_level


def test_identical_frames_store_exactly_no_motion() -> None:
    """Farneback returns sub-pixel noise between two identical noisy frames, which the 8-bit store would
    turn into a level or two here and there; a repeated frame is stored as exactly "no motion" (128)."""
    frame = np.random.default_rng(0).integers(0, 256, (40, 53, 3), dtype=np.uint8)
    assert (compute_flow(np.stack([frame, frame, frame])) == 128).all()
    moved = np.roll(frame, 2, axis=1)
    assert (compute_flow(np.stack([frame, moved]))[..., 0] > 130).mean() > 0.5  # a real shift still shows


def test_motion_warning_rule() -> None:
    assert motion_warning(0.9, 0.85, 1 / 6) is not None and "scenery" in motion_warning(0.9, 0.85, 1 / 6)
    assert motion_warning(0.9, 0.79, 1 / 6) is None, "static clips well below the real videos: it reads motion"
    assert motion_warning(0.25, 0.25, 1 / 6) is None, "a model near chance says nothing either way"


def test_flow_model_scores_chance_on_static_clips_and_metrics_are_written(tiny_project: Path) -> None:
    """A flow model sees the same all-zero-motion input for every static clip: one prediction for all."""
    from vt_models.classify.evaluate import evaluate_checkpoint
    from vt_models.classify.runner import train_backbone
    from vt_models.cli import format_motion_table

    cfg = load_config(
        "params.yaml", ["train.weights=none", "train.epochs=1", "train.modality=flow", "evaluate.views=1"]
    )
    best = train_backbone(cfg, "train", "resnet18", progress=False, track=False).best_path
    out = cfg.eval_dir("resnet18")
    report = evaluate_checkpoint(
        best,
        cfg.frames_dir("target"),
        cfg.splits_path("target"),
        out,
        views=1,
        device="cpu",
        measure_cost=False,
        reverse_pairs=cfg.evaluate.reverse_pairs,
        seed=cfg.seed,
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(report.metrics))
    for key in (
        "motion_static_accuracy",
        "motion_static_macro_f1",
        "motion_reversed_accuracy",
        "motion_reversed_macro_f1",
        "motion_reversed_changed",
        "motion_shuffled_accuracy",
        "motion_shuffled_macro_f1",
        "motion_chance",
        "motion_majority",
    ):
        assert 0.0 <= m[key] <= 1.0, key
    classes = report.classes
    assert m["motion_chance"] == pytest.approx(1 / len(classes))

    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    truth = [r["true_label"] for r in rows]
    assert m["motion_majority"] == pytest.approx(max(truth.count(c) for c in classes) / len(truth))
    static = {r["static_pred"] for r in rows}
    assert len(static) == 1, f"a motion-only model must answer the same for every static clip, got {static}"
    assert m["motion_static_accuracy"] == pytest.approx(truth.count(static.pop()) / len(truth))
    assert m["motion_static_accuracy"] <= m["motion_majority"]
    swap = {"left": "right", "right": "left"}
    assert [r["reversed_target"] for r in rows] == [swap.get(t, t) for t in truth]
    assert m["motion_reversed_accuracy"] == pytest.approx(
        np.mean([r["reversed_pred"] == r["reversed_target"] for r in rows])
    )
    assert m["motion_reversed_changed"] == pytest.approx(np.mean([r["reversed_pred"] != r["pred_label"] for r in rows]))
    assert m["motion_shuffled_accuracy"] == pytest.approx(
        np.mean([r["shuffled_pred"] == r["true_label"] for r in rows])
    )
    expect_warning = motion_warning(m["accuracy"], m["motion_static_accuracy"], m["motion_chance"])
    assert m.get("motion_warning") == expect_warning

    table = format_motion_table(cfg)
    assert table.splitlines()[0].split()[:3] == ["backbone", "test", "acc"]
    assert f"{m['motion_static_accuracy']:.3f}" in table.splitlines()[1] and table.splitlines()[1].startswith(
        "resnet18"
    )

    off = evaluate_checkpoint(
        best,
        cfg.frames_dir("target"),
        cfg.splits_path("target"),
        out,
        views=1,
        device="cpu",
        measure_cost=False,
        probes=False,
    )
    assert not any(k.startswith("motion_") for k in off.metrics)
    assert "static_pred" not in (out / "predictions.csv").read_text().splitlines()[0]


def test_flow_span_sums_consecutive_pairs_and_keeps_static_clips_still() -> None:
    """flow_span 2: each position holds the motion over two stored pairs (about twice one pair's), from
    positions whose second pair exists; a static clip still has no motion."""
    import dataclasses

    left = square_moving_left(n=9, step=1)
    one, two = flow_transform(), dataclasses.replace(flow_transform(), flow_span=2)
    x1 = make_clip(MemoryFrames(left), one, clip_len=4, train=False)
    x2 = make_clip(MemoryFrames(left), two, clip_len=4, train=False)
    assert x1.shape == x2.shape == (2, 4, 32, 32)
    assert float(x2[0].mean()) < 1.5 * float(x1[0].mean()) < 0, "twice the leftward displacement"
    static = make_clip(MemoryFrames(perturb(left, "static")), two, clip_len=4, train=False)
    assert float(static.abs().max()) <= 2 * 0.5 / 127.5 / normalisation("flow")[1][0] + 1e-6


def test_time_reversal_augmentation_swaps_paired_labels_and_plays_motion_backwards(tmp_path: Path) -> None:
    import torch

    from vt_models.classify.data import ClipDataset, VideoRecord, reverse_clip, reverse_partners
    from vt_models.data.frames import save_frames

    classes = ["left", "right", "wave"]
    assert reverse_partners(classes, DEFAULT_REVERSE_PAIRS) == [1, 0, -1], "a class in no pair is never reversed"
    # motion inputs change sign as well as order; frames only change order
    clip = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)
    assert reverse_clip(clip, "flow")[:, :, 0, 0].tolist() == [[-2, -1, -0], [-5, -4, -3]]
    assert reverse_clip(clip, "rgb")[:, :, 0, 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    # the reversed flow of a clip moving left is about the flow of the same clip played backwards
    tf = flow_transform()
    left = square_moving_left()
    forward = make_clip(MemoryFrames(left), tf, clip_len=4, train=False)
    backward = make_clip(MemoryFrames(perturb(left, "reversed")), tf, clip_len=4, train=False)
    assert float(reverse_clip(forward, "flow")[0].mean()) == pytest.approx(float(backward[0].mean()), rel=0.3)
    # in a training set: left becomes right, wave keeps its label and its clips play forwards
    path = save_frames(tmp_path / "left.npz", left, np.arange(len(left)), (48, 48), 95, flow=compute_flow(left))
    records = [VideoRecord("l.mp4", 0, path, len(left)), VideoRecord("w.mp4", 2, path, len(left))]
    partners = reverse_partners(classes, DEFAULT_REVERSE_PAIRS)
    always = ClipDataset(records, tf, 4, train=True, partners=partners, reverse_p=1.0)
    (x0, y0), (x2, y2) = always[0], always[1]
    assert (y0, y2) == (1, 2)
    assert float(x0[0].mean()) > 0.05 > -0.05 > float(x2[0].mean()), "reversed left moves right; wave is untouched"
    never = ClipDataset(records, tf, 4, train=True, partners=partners, reverse_p=0.0)
    assert [never[i][1] for i in range(2)] == [0, 2]
    assert ClipDataset(records, tf, 4, train=False, partners=partners, reverse_p=1.0)[0][1] == 0, "eval: no reversal"
