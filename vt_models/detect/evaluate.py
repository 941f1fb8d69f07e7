"""Evaluate a detector checkpoint on a split: COCO mAP, and MOT metrics with and without tracking.

Every stored frame of every test video is detected. Detection is scored per frame (COCO mAP@[.5:.95],
mAP@.5, per-class AP, precision and recall at the score threshold); then each video's frames are
tracked and scored against the ground-truth tracks (MOTA, IDF1, ID switches from py-motmetrics; HOTA,
DetA, AssA from TrackEval), next to the raw per-frame detections ("untracked") so the tracker's benefit
is measured on the same detections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from vt_models.config import TrackerConfig
from vt_models.detect.data import DetVideo, FrameBoxDataset, collate, load_detection_data
from vt_models.detect.predict import checkpoint_tracker
from vt_models.detect.task import DetectionTask
from vt_models.eval.detection_metrics import detection_metrics
from vt_models.eval.metrics import EvalReport
from vt_models.eval.mot import FrameBoxes, accumulate, summarise, tracks_to_frames
from vt_models.io.files import file_md5, write_csv, write_json
from vt_models.models.checkpoint import load_checkpoint
from vt_models.models.detectors import detector_from_checkpoint
from vt_models.models.network import count_parameters
from vt_models.track.tracker import FrameDetections, TrackedBox, track_video, untracked
from vt_models.train.engine import predict
from vt_models.train.runtime import resolve_device, to_device

log = logging.getLogger(__name__)
# the MOT metrics copied into metrics.json (hence MLflow) as tracked_* / untracked_*; mot.json has them all
MOT_SUMMARY = ("mota", "idf1", "hota", "deta", "assa", "id_switches", "precision", "recall")
# every scored image's raw detections and ground truth (OUTPUT_KEYS, plus each image's video index): the
# promotion gate scores the same checkpoint on the same videos from this file instead of detecting again
OUTPUTS_FILE = "outputs.npz"


VideoSequence = tuple[list[FrameDetections], list[FrameBoxes]]  # one video's detections and GT tracks, per frame


def per_video(out: dict[str, np.ndarray], ds: FrameBoxDataset) -> list[VideoSequence]:
    """Regroup flat per-image outputs into per-video frame sequences of detections and GT tracks."""
    from vt_models.data.frames import load_boxes

    sequences: dict[int, tuple[list[FrameDetections], list[tuple[np.ndarray, np.ndarray]]]] = {}
    boxes: dict[int, Any] = {}  # one read of each video's stored boxes, not one per frame
    for image_id in out["image_ids"]:
        v, pos = ds.items[int(image_id)]
        keep = out["det_image"] == image_id
        dets = FrameDetections(out["det_boxes"][keep], out["det_scores"][keep], out["det_labels"][keep])
        if v not in boxes:
            boxes[v] = load_boxes(ds.videos[v].file)
        xyxy, _, track = boxes[v].at(pos)
        seq = sequences.setdefault(v, ([], []))
        seq[0].append(dets)
        seq[1].append((track.astype(np.int64), xyxy.astype(np.float64)))
    return [sequences[v] for v in sorted(sequences)]


def mot_scores(
    sequences: list[VideoSequence], run: Callable[[list[FrameDetections]], list[list[TrackedBox]]]
) -> dict[str, float]:
    """MOT metrics of ``run`` (a video's detections -> its reported tracks, per frame), pooled over videos."""
    accs = [accumulate(gt, tracks_to_frames(run(dets))) for dets, gt in sequences]
    return {**summarise(accs), "videos": float(len(accs))}


def tracking_metrics(sequences: list[VideoSequence], tracker: TrackerConfig) -> dict[str, dict[str, float]]:
    """MOT metrics pooled over videos, ``tracked`` (the tracker's output) and ``untracked`` (the raw detections
    above ``tracker.high_score``, a new id every frame): what the tracker adds on the same detections."""
    return {
        "tracked": mot_scores(sequences, lambda dets: track_video(dets, tracker)),
        "untracked": mot_scores(sequences, lambda dets: untracked(dets, tracker.high_score)),
    }


@dataclass
class DetectorRun:
    """A detector's raw outputs on every stored frame of a split
    (flat arrays: :data:`vt_models.detect.task.OUTPUT_KEYS`)."""

    ckpt: dict[str, Any]
    classes: list[str]
    videos: list[DetVideo]
    dataset: FrameBoxDataset  # dataset.items[image_id] = (video index, stored position)
    outputs: dict[str, np.ndarray]
    threshold: float
    seconds: float
    data_version: str
    model: Any
    device: Any

    def video_of_images(self) -> np.ndarray:
        """The video index of each image in ``np.unique(outputs["image_ids"])`` order."""
        return np.asarray([self.dataset.items[int(i)][0] for i in np.unique(self.outputs["image_ids"])], np.int64)


def run_detector(
    checkpoint: Path | str,
    frames_dir: Path,
    splits_path: Path,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 4,
) -> DetectorRun:
    """Detect every stored frame of every video of ``split`` (no scoring, no files)."""
    ckpt = load_checkpoint(checkpoint)
    classes = list(ckpt["classes"])
    data = load_detection_data(frames_dir, splits_path, classes, ckpt.get("class_map"))
    videos = data.records[split]
    if not videos:
        raise ValueError(f"split {split!r} of {splits_path} is empty: nothing to evaluate")
    model = detector_from_checkpoint(ckpt)
    dev = resolve_device(device)
    model = to_device(model, dev)
    ds = data.frames(split, train=False)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    threshold = float(ckpt.get("score_threshold", 0.5))
    t0 = time.perf_counter()
    out = predict(model, DetectionTask(classes, threshold), loader, dev, desc=f"detect {split}")
    return DetectorRun(
        ckpt, classes, videos, ds, out, threshold, time.perf_counter() - t0, data.data_version, model, dev
    )


def evaluate_detector(
    checkpoint: Path | str,
    frames_dir: Path,
    splits_path: Path,
    out_dir: Path,
    split: str = "test",
    device: str = "auto",
    tracker: TrackerConfig | None = None,
    batch_size: int = 4,
) -> EvalReport:
    """Score ``checkpoint`` on ``split``; write metrics.json, per_class.csv, predictions.json, mot.json and
    the raw outputs (:data:`OUTPUTS_FILE`)."""
    from vt_models.data.extract import load_index
    from vt_models.data.split import videos_digest

    run = run_detector(checkpoint, frames_dir, splits_path, split, device, batch_size)
    ckpt, classes, videos, ds, out, seconds, model, dev = (
        run.ckpt,
        run.classes,
        run.videos,
        run.dataset,
        run.outputs,
        run.seconds,
        run.model,
        run.device,
    )
    metrics: dict[str, Any] = detection_metrics(
        out["det_image"],
        out["det_boxes"],
        out["det_scores"],
        out["det_labels"],
        out["gt_image"],
        out["gt_boxes"],
        out["gt_labels"],
        out["image_ids"],
        classes,
        run.threshold,
    )

    mot = tracking_metrics(per_video(out, ds), tracker or checkpoint_tracker(ckpt))
    for kind, values in mot.items():
        metrics.update({f"{kind}_{k}": v for k, v in values.items() if k in MOT_SUMMARY})
    metrics.update(
        {
            "detector": ckpt["detector"],
            "split": split,
            "data_version": run.data_version,
            # which model and which test videos (with their content) these scores are of: the gate reuses them
            "checkpoint_md5": file_md5(Path(checkpoint)),
            "test_set": videos_digest(load_index(frames_dir), [v.path for v in videos]),
            "videos": len(videos),
            "params": count_parameters(model),
            "ms_per_frame": 1000 * seconds / max(1, len(ds)),
            "device": str(dev),
            "frames_per_s": len(ds) / max(seconds, 1e-9),
        }
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", {k: v for k, v in metrics.items() if "/" not in k})
    write_json(out_dir / "mot.json", mot)
    np.savez_compressed(out_dir / OUTPUTS_FILE, **out, video_of_images=run.video_of_images())
    write_csv(
        out_dir / "per_class.csv",
        [{"class": c, "ap": metrics.get(f"ap/{c}"), "ap50": metrics.get(f"ap50/{c}")} for c in classes],
        ["class", "ap", "ap50"],
    )
    write_json(
        out_dir / "predictions.json",
        {
            "classes": classes,
            "images": [
                {
                    "video": videos[ds.items[int(i)][0]].path,
                    "position": ds.items[int(i)][1],
                    "frame": videos[ds.items[int(i)][0]].frame_indices[ds.items[int(i)][1]],
                }
                for i in out["image_ids"]
            ],
            "detections": [
                {"image": int(i), "box_xyxy": [float(x) for x in b], "score": float(s), "label": classes[int(c)]}
                for i, b, s, c in zip(
                    out["det_image"], out["det_boxes"], out["det_scores"], out["det_labels"], strict=True
                )
            ],
        },
    )
    log.info(
        "detector %s on %s: mAP %.4f, mAP@.5 %.4f; MOTA tracked %.3f vs untracked %.3f, IDF1 %.3f vs %.3f, "
        "HOTA %.3f vs %.3f",
        ckpt["detector"],
        split,
        metrics["map"],
        metrics["map_50"],
        mot["tracked"]["mota"],
        mot["untracked"]["mota"],
        mot["tracked"]["idf1"],
        mot["untracked"]["idf1"],
        mot["tracked"]["hota"],
        mot["untracked"]["hota"],
    )
    return EvalReport(out_dir, metrics, classes)
