"""Run a trained detector on frames or a video file; track, draw, and write the tracks.

`vt predict` on a detector (checkpoint or ``models:/`` URI), the evaluation's sample clip, the
dashboard and the MLflow model all use :class:`DetectorPredictor`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vt_models.config import ExtractConfig, TrackerConfig
from vt_models.io.files import write_json
from vt_models.models.checkpoint import load_checkpoint
from vt_models.models.detectors import detector_from_checkpoint
from vt_models.track.tracker import FrameDetections, TrackedBox, track_video
from vt_models.train.runtime import resolve_device, to_device

log = logging.getLogger(__name__)

# Distinct colours for track ids (RGB).
_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
]


@dataclass
class VideoTracks:
    video: str
    fps: float
    frame_indices: list[int]  # source frame of each processed frame
    classes: list[str]
    tracks: list[list[TrackedBox]]  # per processed frame, boxes in the processed (resized) frame's pixels
    seconds: float
    scale: tuple[float, float] = (1.0, 1.0)  # (x, y) factors from processed-frame to source-video pixels

    def to_json(self) -> dict[str, Any]:
        by_id: dict[int, dict[str, Any]] = {}
        for pos, frame in enumerate(self.tracks):
            for t in frame:
                entry = by_id.setdefault(t.track_id, {"track_id": t.track_id, "frames": []})
                entry["frames"].append(
                    {
                        "frame": self.frame_indices[pos],
                        "time_s": round(self.frame_indices[pos] / self.fps, 4) if self.fps else None,
                        "box_xyxy": [round(float(v) * self.scale[i % 2], 2) for i, v in enumerate(t.box)],
                        "score": round(float(t.score), 4),
                        "label": self.classes[t.label],
                        "predicted": bool(t.predicted),
                    }
                )
        for entry in by_id.values():  # a track's label: its most frequent per-frame label
            labels = [f["label"] for f in entry["frames"]]
            entry["label"] = max(set(labels), key=labels.count)
        # boxes in source-video pixels, so they overlay the original file
        return {
            "video": self.video,
            "fps": self.fps,
            "classes": self.classes,
            "frames_processed": len(self.tracks),
            "seconds": round(self.seconds, 3),
            "tracks": sorted(by_id.values(), key=lambda e: e["track_id"]),
        }


def checkpoint_tracker(ckpt: dict[str, Any]) -> TrackerConfig:
    """The tracker settings a detector was trained with (its checkpoint's ``detect`` config)."""
    return TrackerConfig.model_validate(ckpt.get("config", {}).get("tracker", {}))


class DetectorPredictor:
    """A detector checkpoint, ready to run on uint8 RGB frames (any size)."""

    def __init__(self, ckpt: dict[str, Any], device: str = "cpu", batch_size: int = 4) -> None:
        self.ckpt = ckpt
        self.classes: list[str] = list(ckpt["classes"])
        self.device = resolve_device(device)
        self.model = to_device(detector_from_checkpoint(ckpt), self.device).eval()
        self.batch_size = batch_size
        self.extract = ExtractConfig.model_validate(ckpt["extract"])
        self.tracker = checkpoint_tracker(ckpt)

    @classmethod
    def from_path(cls, path: Path | str, device: str = "cpu") -> DetectorPredictor:
        return cls(load_checkpoint(path), device)

    @torch.no_grad()
    def detect(self, frames: np.ndarray) -> list[FrameDetections]:
        """Detections per frame (boxes in the given frames' pixels; labels 0..K-1)."""
        out: list[FrameDetections] = []
        for start in range(0, len(frames), self.batch_size):
            batch = [
                torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float().div_(255).to(self.device)
                for f in frames[start : start + self.batch_size]
            ]
            for o in self.model(batch):
                out.append(
                    FrameDetections(
                        o["boxes"].float().cpu().numpy(),
                        o["scores"].float().cpu().numpy(),
                        o["labels"].cpu().numpy() - 1,
                    )
                )
        return out

    def track_video(self, path: Path | str, tracker: TrackerConfig | None = None) -> tuple[VideoTracks, np.ndarray]:
        """Decode ``path`` as the training data was sampled (``extract`` params), detect and track."""
        from vt_models.data.frames import decode_sampled

        t0 = time.perf_counter()

        def rate(info: Any) -> Any:
            # the whole video at the training frame rate (training clips cap max_frames; a prediction must not)
            fps = self.extract.fps if self.extract.mode == "fps" else max(info.fps, 1.0)
            return self.extract.model_copy(update={"mode": "fps", "max_frames": 10**9, "fps": fps})

        sampled = decode_sampled(path, rate)
        frames, info = sampled.frames, sampled.info
        tracks = track_video(self.detect(frames), tracker or self.tracker)
        scale = (info.width / frames.shape[2], info.height / frames.shape[1])
        return VideoTracks(
            str(path),
            info.fps,
            [int(i) for i in sampled.indices],
            self.classes,
            tracks,
            time.perf_counter() - t0,
            scale,
        ), frames

    def annotate(
        self, path: Path | str, out_mp4: Path | str, out_json: Path | str, tracker: TrackerConfig | None = None
    ) -> VideoTracks:
        """Write an annotated MP4 (boxes, track ids, labels) and a JSON of the tracks for one video."""
        from vt_models.video.encode import write_video

        result, frames = self.track_video(path, tracker)
        drawn = draw_tracks(frames, result.tracks, self.classes)
        h, w = drawn.shape[1:3]
        drawn = drawn[:, : h - h % 2, : w - w % 2]  # H.264 wants even sizes
        fps = min(self.extract.fps, result.fps) if self.extract.mode == "fps" else result.fps
        write_video(out_mp4, drawn, fps, container_options={"movflags": "+faststart"})
        write_json(out_json, result.to_json())
        return result


def draw_tracks(frames: np.ndarray, tracks: list[list[TrackedBox]], classes: list[str]) -> np.ndarray:
    """Frames with each track's box, id and label drawn (dashed look for occlusion predictions)."""
    from PIL import Image, ImageDraw

    out = np.empty_like(frames)
    for i, (frame, boxes) in enumerate(zip(frames, tracks, strict=True)):
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        for t in boxes:
            color = _PALETTE[t.track_id % len(_PALETTE)]
            x1, y1, x2, y2 = (float(v) for v in t.box)
            draw.rectangle([x1, y1, x2, y2], outline=color, width=1 if t.predicted else 2)
            draw.text((x1 + 2, max(0.0, y1 - 11)), f"{t.track_id} {classes[t.label]}", fill=color)
        out[i] = np.asarray(image)
    return out


def predict_detection(predictor: DetectorPredictor, videos: list[Path], out_dir: Path) -> list[dict[str, Any]]:
    """`vt predict` for detectors: per video an annotated MP4 and a tracks JSON, or a per-file error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for video in videos:
        stem = Path(video).stem
        try:
            tracks = predictor.annotate(video, out_dir / f"{stem}.tracks.mp4", out_dir / f"{stem}.tracks.json")
            results.append(
                {
                    "video": str(video),
                    "tracks": len(tracks.to_json()["tracks"]),
                    "mp4": str(out_dir / f"{stem}.tracks.mp4"),
                    "json": str(out_dir / f"{stem}.tracks.json"),
                }
            )
        except Exception as exc:  # one bad file must not stop the others
            log.warning("%s: %s", video, exc)
            results.append({"video": str(video), "error": f"{type(exc).__name__}: {exc}"})
    return results
