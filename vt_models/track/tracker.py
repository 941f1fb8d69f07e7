"""ByteTrack-style multi-object tracking of per-frame detections (IoU only, no appearance model).

Per frame (``Tracker.update``):

1. every live track predicts its box with a constant-velocity model: the box moves by an EMA of
   its per-frame displacement (``velocity_momentum``, default 0.9; a plain mean while it has
   fewer samples than that memory), each displacement measured from the smoothed box at the
   previous match to the new detection (divided by the frames between them). With the box EMA
   this is an alpha-beta filter (alpha = 1 - box_smoothing, beta = 1 - velocity_momentum);
   a slow velocity keeps the extrapolation through occlusions steady under detector jitter;
2. high-score detections (``score >= high_score``) are matched to all live tracks, then the
   low-score ones (``low_score <= score < high_score``) to the tracks still unmatched. Both stages
   are Hungarian on cost ``1 - IoU`` (predicted track box vs detection); a pair is only made if its
   IoU is at least ``match_iou``, and each made pair is worth ``IoU - match_iou`` (ByteTrack's
   ``lapjv(cost_limit=1 - match_iou)``), so one good pair is not traded for two poor ones;
3. unmatched high-score detections start tentative tracks; low-score ones never do (they are
   mostly false positives, but a weak detection of an object already tracked is valuable);
4. a track is confirmed (and gets the next id, 1, 2, ...) on its ``min_hits``-th match and is
   reported from that frame on. A confirmed track that goes unmatched is reported for up to
   ``max_age`` frames with ``predicted=True`` and its extrapolated box (this bridges occlusions),
   then deleted. A tentative track is deleted as soon as it misses a frame: a detection not seen
   again in the next frame is most likely a false positive.

Labels are not used for association (detector labels flicker); each track accumulates detection
score per label and reports the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from vt_models.boxes import iou_matrix
from vt_models.config import TrackerConfig


@dataclass(frozen=True)
class FrameDetections:
    """One frame's detections; arrays are coerced to (N, 4) float64, (N,) float64, (N,) int64."""

    boxes: np.ndarray  # (N, 4) xyxy
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) class index

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, np.float64).reshape(-1)
        labels = np.asarray(self.labels, np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"boxes ({len(boxes)}), scores ({len(scores)}) and labels ({len(labels)}) differ in length"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def empty(cls) -> FrameDetections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class TrackedBox:
    track_id: int
    box: np.ndarray  # (4,) xyxy, smoothed
    score: float  # score of the last matched detection
    label: int  # argmax of the accumulated score per label
    predicted: bool  # not matched this frame: the box is extrapolated


@dataclass
class _Track:
    box: np.ndarray  # current estimate: smoothed at the last match, then advanced by velocity
    anchor: np.ndarray  # smoothed box at the last match; velocity is measured from it
    anchor_frame: int
    score: float
    label_scores: dict[int, float]
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    steps: int = 0  # displacement measurements folded into velocity
    hits: int = 1
    missed: int = 0  # consecutive unmatched frames
    track_id: int = 0  # 0 while tentative

    def label(self) -> int:
        return max(self.label_scores, key=self.label_scores.__getitem__)


class Tracker:
    """Stateful tracker: call ``update`` once per frame, in order."""

    def __init__(self, cfg: TrackerConfig = TrackerConfig(), *, velocity_momentum: float = 0.9) -> None:
        if not 0 <= velocity_momentum < 1:
            raise ValueError(f"velocity_momentum must be in [0, 1), got {velocity_momentum}")
        self.cfg = cfg
        self.velocity_momentum = velocity_momentum
        self._tracks: list[_Track] = []
        self._frame = -1
        self._next_id = 1

    def update(self, dets: FrameDetections) -> list[TrackedBox]:
        """Associate this frame's detections; return the confirmed tracks alive in it, by id."""
        cfg = self.cfg
        self._frame += 1
        for tr in self._tracks:
            tr.box = _advance(tr.box, tr.velocity)

        high = np.flatnonzero(dets.scores >= cfg.high_score)
        low = np.flatnonzero((dets.scores >= cfg.low_score) & (dets.scores < cfg.high_score))
        matches, unmatched, new = self._match(list(range(len(self._tracks))), high, dets.boxes)
        matches2, unmatched, _ = self._match(unmatched, low, dets.boxes)
        for ti, di in matches + matches2:
            self._apply(self._tracks[ti], dets.boxes[di], float(dets.scores[di]), int(dets.labels[di]))
        for ti in unmatched:
            self._tracks[ti].missed += 1

        self._tracks = [t for t in self._tracks if t.missed <= (cfg.max_age if t.track_id else 0)]
        for di in new:
            box = dets.boxes[di].copy()
            self._tracks.append(
                _Track(
                    box=box,
                    anchor=box,
                    anchor_frame=self._frame,
                    score=float(dets.scores[di]),
                    label_scores={int(dets.labels[di]): float(dets.scores[di])},
                )
            )
            self._confirm(self._tracks[-1])

        out = [
            TrackedBox(t.track_id, t.box.copy(), t.score, t.label(), predicted=t.missed > 0)
            for t in self._tracks
            if t.track_id
        ]
        return sorted(out, key=lambda b: b.track_id)

    def _match(
        self, track_idx: list[int], det_idx: np.ndarray, boxes: np.ndarray
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Hungarian on predicted track boxes vs detections -> (pairs, unmatched tracks, unmatched dets)."""
        if not track_idx or not len(det_idx):
            return [], list(track_idx), [int(d) for d in det_idx]
        iou = iou_matrix(np.stack([self._tracks[t].box for t in track_idx]), boxes[det_idx])
        valid = iou >= self.cfg.match_iou
        # Gain IoU - match_iou per pair (ByteTrack's cost_limit); invalid pairs gain nothing, i.e.
        # are no better than leaving both sides unmatched, and are dropped afterwards.
        rows, cols = linear_sum_assignment(np.where(valid, iou - self.cfg.match_iou, 0.0), maximize=True)
        pairs = [(track_idx[r], int(det_idx[c])) for r, c in zip(rows, cols, strict=True) if valid[r, c]]
        used_t = {p[0] for p in pairs}
        used_d = {p[1] for p in pairs}
        return pairs, [t for t in track_idx if t not in used_t], [int(d) for d in det_idx if int(d) not in used_d]

    def _apply(self, tr: _Track, box: np.ndarray, score: float, label: int) -> None:
        """Fold a matched detection into the track: velocity EMA, box EMA, label votes."""
        s = self.cfg.box_smoothing
        step = (box - tr.anchor) / (self._frame - tr.anchor_frame)
        tr.steps += 1
        if tr.steps > 1:
            # A plain running mean until the EMA has as many samples as its memory, so the first
            # (noisy) displacement does not linger in the velocity for many frames.
            w = max(1 - self.velocity_momentum, 1 / tr.steps)
            tr.velocity = (1 - w) * tr.velocity + w * step
            tr.box = s * tr.box + (1 - s) * box
        else:
            # Second sighting: the first motion estimate. The "predicted" box had no motion in it,
            # so smoothing against it would only drag the box behind the object.
            tr.velocity = step
            tr.box = box.copy()
        tr.anchor, tr.anchor_frame = tr.box.copy(), self._frame
        tr.score = score
        tr.label_scores[label] = tr.label_scores.get(label, 0.0) + score
        tr.hits += 1
        tr.missed = 0
        self._confirm(tr)

    def _confirm(self, tr: _Track) -> None:
        # Ids are handed out on confirmation so reported ids run 1, 2, 3, ... without the gaps
        # that discarded tentative tracks would leave.
        if not tr.track_id and tr.hits >= self.cfg.min_hits:
            tr.track_id = self._next_id
            self._next_id += 1


# Smallest side an extrapolated box keeps, in pixels.
MIN_SIDE = 1.0


def _advance(box: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """``box + velocity`` (x1, y1, x2, y2), with each side kept at ``MIN_SIDE`` or more around its centre.

    Why: the velocity moves the four edges independently, so a track that shrank between its matches
    keeps shrinking while it is unmatched, and after a few frames its box would turn inside out.
    """
    out = box + velocity
    for lo, hi in ((0, 2), (1, 3)):
        if out[hi] - out[lo] < MIN_SIDE:
            mid = 0.5 * (out[lo] + out[hi])
            out[lo], out[hi] = mid - MIN_SIDE / 2, mid + MIN_SIDE / 2
    return out


def track_video(frames: list[FrameDetections], cfg: TrackerConfig = TrackerConfig()) -> list[list[TrackedBox]]:
    """Run a fresh ``Tracker`` over a video's frames."""
    tracker = Tracker(cfg)
    return [tracker.update(f) for f in frames]


def untracked(frames: list[FrameDetections], score_threshold: float) -> list[list[TrackedBox]]:
    """The no-tracking baseline: detections above the threshold, each with a fresh id every frame."""
    out: list[list[TrackedBox]] = []
    next_id = 1
    for f in frames:
        keep = np.flatnonzero(f.scores >= score_threshold)
        out.append(
            [
                TrackedBox(next_id + k, f.boxes[i].copy(), float(f.scores[i]), int(f.labels[i]), predicted=False)
                for k, i in enumerate(keep)
            ]
        )
        next_id += len(keep)
    return out
