"""``vt bench track``: what the tracker adds over per-frame detections, under injected faults, and a sweep.

The detections are a trained detector's on the test split (the evaluate stage's ``outputs.npz`` when it
belongs to the same checkpoint and test videos, else detected afresh), or with ``from_gt`` a simulated
detector (ground-truth boxes with pixel jitter). Each scenario scores the same detections tracked
(``detect.tracker``), by the ``trackers`` package's ByteTrack with the same settings (the reference), and
untracked (the detections above ``high_score``, a new id every frame), with the evaluate stage's MOT
metrics; the
faults (:mod:`vt_models.track.faults`) are drawn once from ``seed``, so every tracker setting of the
sweep sees the same ones. A benchmark that prints figures, not a test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vt_models.config import Config, TrackerConfig
from vt_models.detect.evaluate import VideoSequence, mot_scores, per_video, tracking_metrics
from vt_models.track.faults import add_low_score_noise, detections_from_gt, drop_runs
from vt_models.track.reference import bytetrack_reference
from vt_models.track.tracker import track_video

# the sweep's grid; the other tracker settings stay as configured
SWEEP: dict[str, tuple[Any, ...]] = {"match_iou": (0.2, 0.3, 0.5), "max_age": (2, 4, 8), "min_hits": (1, 2, 3)}
SHOWN = ("mota", "idf1", "hota", "id_switches")


def split_sequences(
    cfg: Config, detector: str | None, from_gt: bool, jitter_px: float = 2.0
) -> tuple[list[VideoSequence], str]:
    """Per test video, the detections (a detector's, or simulated from GT) and GT tracks; and where they
    come from, in words."""
    from vt_models.detect.data import load_detection_data
    from vt_models.detect.evaluate import run_detector
    from vt_models.detect.steps import reusable_outputs
    from vt_models.models.checkpoint import load_checkpoint

    frames_dir, splits_path, split = cfg.detect_frames_dir(), cfg.detect_splits_path(), cfg.evaluate.split
    if from_gt:
        data = load_detection_data(frames_dir, splits_path, class_map=cfg.detect.class_map)
        ds = data.frames(split, train=False)
        none = {"det_image": np.zeros(0, np.int64), "det_boxes": np.zeros((0, 4)), "det_scores": np.zeros(0)}
        gt_only = per_video({"image_ids": np.arange(len(ds)), **none, "det_labels": np.zeros(0, np.int64)}, ds)
        # the jitter's stream, apart from the faults' (scenarios): both come from `seed`
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[0])
        score = max(0.9, (1 + cfg.detect.tracker.high_score) / 2)  # above high_score: every box starts/extends
        seqs = [(detections_from_gt(gt, jitter_px, score, rng), gt) for _, gt in gt_only]
        return seqs, f"simulated: ground-truth boxes with N(0, {jitter_px} px) corner jitter, score {score:g}"
    name = detector or cfg.detect.detectors[0]
    checkpoint = cfg.run_dir("detect", name) / "best.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"{checkpoint} not found: run `vt detect train -d {name}` (or `dvc repro`) first, or pass --from-gt"
        )
    videos = json.loads(splits_path.read_text(encoding="utf-8"))["splits"][split]
    out = reusable_outputs(cfg.detect_eval_dir(name), checkpoint, videos, cfg)
    if out is None:
        run = run_detector(checkpoint, frames_dir, splits_path, split, cfg.detect.device, cfg.detect.batch_size)
        return per_video(run.outputs, run.dataset), f"{checkpoint}, detected afresh on {split}"
    ckpt = load_checkpoint(checkpoint)
    data = load_detection_data(frames_dir, splits_path, list(ckpt["classes"]), ckpt.get("class_map"))
    ds = data.frames(split, train=False)
    return per_video(out, ds), f"{checkpoint}, the evaluate stage's detections ({cfg.detect_eval_dir(name)})"


def scenarios(
    seqs: list[VideoSequence], tracker: TrackerConfig, occlusion: int, noise: float, seed: int
) -> dict[str, list[VideoSequence]]:
    """The clean detections and the same with each fault, and with both (drawn once, from ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    occluded = [(drop_runs(dets, gt, occlusion, rng), gt) for dets, gt in seqs]
    noisy = [
        (add_low_score_noise(dets, gt, noise, tracker.low_score, tracker.high_score, rng), gt) for dets, gt in seqs
    ]
    both = [
        (add_low_score_noise(dets, gt, noise, tracker.low_score, tracker.high_score, rng), gt) for dets, gt in occluded
    ]
    return {
        "clean": seqs,
        f"occlusion: {occlusion} frames per track": occluded,
        f"low-score noise: {noise:g} per frame": noisy,
        "occlusion + noise": both,
    }


def bench_track(
    cfg: Config,
    detector: str | None = None,
    from_gt: bool = False,
    occlusion: int = 3,
    noise: float = 1.0,
    sweep: bool = True,
    out: Path | None = None,
    reference: bool = True,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Tracked against untracked MOT metrics per scenario (and, with ``reference``, the ``trackers`` package's
    ByteTrack with the same settings), then the tracker sweep on the hardest one."""
    tracker = cfg.detect.tracker
    seqs, where = split_sequences(cfg, detector, from_gt)
    echo(f"bench track: {len(seqs)} test videos, {sum(len(d) for d, _ in seqs)} frames; detections: {where}")
    cases = scenarios(seqs, tracker, occlusion, noise, cfg.seed)
    figures: dict[str, Any] = {"detections": where, "tracker": tracker.model_dump(), "scenarios": {}}
    if reference:
        from importlib.metadata import version

        figures["reference"] = f"trackers {version('trackers')} ByteTrackTracker"
    echo(f"ours / trackers' ByteTrack / per-frame detections ({', '.join(SHOWN)}):")
    if reference and tracker.min_hits == 1:
        echo("  (min_hits 1: the reference reports a new track one frame later than ours; 2 and above match)")
    echo(f"{'scenario':38s}  " + "  ".join(f"{k:>23s}" for k in SHOWN))
    for label, case in cases.items():
        mot = tracking_metrics(case, tracker)
        if reference:
            mot["reference"] = mot_scores(case, lambda dets: bytetrack_reference(dets, tracker))
        figures["scenarios"][label] = mot
        kinds = ("tracked", "reference", "untracked") if reference else ("tracked", "untracked")
        cells = ["/".join(f"{mot[kind][k]:.3f}" for kind in kinds) for k in SHOWN]
        echo(f"{label:38s}  " + "  ".join(f"{c:>23s}" for c in cells))
    if sweep:
        hardest = list(cases)[-1]
        rows = []
        for values in itertools.product(*SWEEP.values()):
            setting = tracker.model_copy(update=dict(zip(SWEEP, values, strict=True)))
            # ours only: the untracked and reference scores do not depend on these settings
            tracked = mot_scores(cases[hardest], lambda dets, setting=setting: track_video(dets, setting))
            rows.append({**dict(zip(SWEEP, values, strict=True)), **{k: tracked[k] for k in SHOWN}})
        rows.sort(key=lambda r: (-r["idf1"], -r["mota"]))
        figures["sweep"] = {"scenario": hardest, "rows": rows}
        echo(f"\nsweep on '{hardest}' (tracked; best IDF1 first; * = detect.tracker):")
        echo("  ".join(f"{k:>10s}" for k in (*SWEEP, *SHOWN)))
        for r in rows:
            mark = "*" if all(r[k] == getattr(tracker, k) for k in SWEEP) else " "
            echo("  ".join(f"{r[k]:>10g}" for k in SWEEP) + "  " + "  ".join(f"{r[k]:10.3f}" for k in SHOWN) + mark)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2, default=float), encoding="utf-8")
        echo(f"figures -> {out}")
    return figures
