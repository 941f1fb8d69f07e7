"""The ``trackers`` package's ByteTrack (Roboflow, Apache-2.0) behind our tracker's interface, as a reference.

``vt bench track`` scores it on the same detections as :func:`vt_models.track.tracker.track_video`, so the
README can say, with figures, what our tracker does that the kept library does not. Settings map from
:class:`~vt_models.config.TrackerConfig`: ``high_score`` is both its activation and its high-confidence
threshold, ``match_iou`` its minimum IoU, ``min_hits`` its consecutive frames before a track is reported,
``max_age`` its lost-track buffer (at its 30 fps reference rate, so the same number of frames). One
difference stays: it never reports a track in the frame it starts, so ``min_hits: 1`` reports one frame
later than ours (``min_hits`` 2 and above match). Detections
under ``low_score`` are dropped before it sees them, as ours ignores them. It reports matched detections
only (no extrapolated box while an object is missed) and keeps each detection's own label.
"""

from __future__ import annotations

import numpy as np

from vt_models.config import TrackerConfig
from vt_models.track.tracker import FrameDetections, TrackedBox


def bytetrack_reference(frames: list[FrameDetections], cfg: TrackerConfig) -> list[list[TrackedBox]]:
    """Run ``trackers.ByteTrackTracker`` over one video's frames; its reported tracks per frame."""
    try:
        import supervision as sv
        from trackers import ByteTrackTracker
    except ImportError as exc:  # a test extra, not a runtime dependency
        raise ImportError(
            f"the reference tracker needs the `trackers` package ({exc}): pip install -e '.[test]'"
        ) from None
    tracker = ByteTrackTracker(
        lost_track_buffer=cfg.max_age,
        frame_rate=30.0,
        track_activation_threshold=cfg.high_score,
        minimum_consecutive_frames=cfg.min_hits,
        minimum_iou_threshold=cfg.match_iou,
        high_conf_det_threshold=cfg.high_score,
    )
    out: list[list[TrackedBox]] = []
    for f in frames:
        keep = f.scores >= cfg.low_score
        dets = sv.Detections(
            xyxy=f.boxes[keep],
            confidence=f.scores[keep],  # float64: thresholds compare as ours do
            class_id=f.labels[keep],
        )
        tracked = tracker.update(dets)
        ids = np.asarray(tracked.tracker_id if tracked.tracker_id is not None else [], np.int64)
        out.append(
            [
                TrackedBox(
                    int(ids[i]),
                    tracked.xyxy[i].astype(np.float64),
                    float(tracked.confidence[i]),
                    int(tracked.class_id[i]),
                    predicted=False,
                )
                for i in np.flatnonzero(ids >= 0)
            ]
        )
    return out
