"""Does the model look at motion? Scores on perturbed frame sequences of the test videos.

Each probe perturbs a video's *stored frames* and derives the model input with the one clip recipe
(:func:`vt_models.classify.data.make_clip` on a :class:`~vt_models.data.modality.MemoryFrames`), so for
the motion modalities the motion is recomputed from the perturbed frames:

- ``static``: every stored frame replaced by the middle one. No motion at all: a flow or RGB-difference
  model sees a constant (zero-motion) input for every video, an RGB model sees one still frame.
- ``reversed``: the frames in reverse order, scored against the *swapped* label (``left`` <-> ``right``
  and so on, from ``evaluate.reverse_pairs``; a class in no pair keeps its label). High accuracy: the
  model reads the direction of motion. Also reported: the fraction of videos whose prediction changes
  under reversal (against the normal, multi-view prediction).
- ``shuffled``: the frames in a random order (seeded per video); order-aware models should suffer.

A model that scores about as well on ``static`` clips as on the real videos is probably reading the
scenery, not the motion: :func:`motion_warning` says so. The probes score one clip per video (the centre
view), on the same records as the normal evaluation, so they cost about ``3 / views`` of it plus the
flow computation for flow models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vt_models.classify.data import VideoRecord, make_clip
from vt_models.classify.task import ClassificationTask
from vt_models.data.frames import StoredVideo
from vt_models.data.modality import MemoryFrames, reverse_label_map
from vt_models.eval.metrics import classification_metrics
from vt_models.train.engine import predict

PROBES: tuple[str, ...] = ("static", "reversed", "shuffled")
# The warning: normal accuracy above chance by more than this, static accuracy within this of it.
WARNING_MARGIN = 0.1


def perturb(frames: np.ndarray, probe: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """A video's stored frames ``(T, H, W, 3)`` as ``probe`` changes them (see the module doc)."""
    frames = np.asarray(frames)
    if probe == "static":
        return np.repeat(frames[len(frames) // 2][None], len(frames), axis=0)
    if probe == "reversed":
        return frames[::-1].copy()
    if probe == "shuffled":
        return frames[(rng or np.random.default_rng()).permutation(len(frames))]
    raise ValueError(f"unknown motion probe {probe!r}; choices: {', '.join(PROBES)}")


class ProbeClips(Dataset):
    """``(clip, label)`` for every (video, probe), video-major; one centre clip per video and probe."""

    def __init__(
        self, records: list[VideoRecord], transform: Any, clip_len: int, probes: Sequence[str] = PROBES, seed: int = 0
    ) -> None:
        self.records, self.transform, self.clip_len = records, transform, clip_len
        self.probes, self.seed = tuple(probes), seed
        self._last: tuple[int, np.ndarray] | None = None  # the probes of one video read its frames once

    def __len__(self) -> int:
        return len(self.records) * len(self.probes)

    def stored_frames(self, v: int) -> np.ndarray:
        if self._last is None or self._last[0] != v:
            rec = self.records[v]
            self._last = (v, StoredVideo(rec.file, rec.num_stored).frames(np.arange(rec.num_stored)))
        return self._last[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        v, probe = divmod(i, len(self.probes))
        frames = perturb(self.stored_frames(v), self.probes[probe], np.random.default_rng([self.seed, v]))
        return make_clip(MemoryFrames(frames), self.transform, self.clip_len, train=False), self.records[v].label


def motion_warning(
    accuracy: float, static_accuracy: float, chance: float, margin: float = WARNING_MARGIN
) -> str | None:
    """The warning when the model scores about as well without motion as with it, else None."""
    if accuracy > chance + margin and static_accuracy >= accuracy - margin:
        return (
            f"the model scores {static_accuracy:.3f} accuracy on static clips (every frame the same, no motion) "
            f"against {accuracy:.3f} on the real videos (chance {chance:.3f}): it is probably reading the "
            "scenery, not the motion"
        )
    return None


def motion_probes(
    model: torch.nn.Module,
    transform: Any,
    clip_len: int,
    records: list[VideoRecord],
    classes: Sequence[str],
    video_pred: np.ndarray,
    accuracy: float,
    reverse_pairs: Sequence[Sequence[str]],
    device: torch.device,
    seed: int = 0,
    batch_size: int = 8,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(``motion_*`` metrics, per-video predictions of each probe and the reversed target labels).

    ``video_pred`` and ``accuracy``: the normal evaluation's video-level predictions and accuracy.
    """
    k = len(classes)
    labels = np.asarray([r.label for r in records], np.int64)
    swapped = reverse_label_map(classes, reverse_pairs)[labels]
    ds = ProbeClips(records, transform, clip_len, PROBES, seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    probs = predict(model, ClassificationTask(k), loader, device)["probs"].reshape(len(records), len(PROBES), k)
    preds = {p: probs[:, j].argmax(1) for j, p in enumerate(PROBES)}
    targets = {"static": labels, "reversed": swapped, "shuffled": labels}
    metrics: dict[str, Any] = {}
    for p in PROBES:
        scores = classification_metrics(targets[p], preds[p], k)
        metrics[f"motion_{p}_accuracy"] = scores["accuracy"]
        metrics[f"motion_{p}_macro_f1"] = scores["macro_f1"]
    metrics["motion_reversed_changed"] = (
        float((preds["reversed"] != np.asarray(video_pred)).mean()) if len(records) else 0.0
    )
    metrics["motion_chance"] = 1.0 / k
    metrics["motion_majority"] = float(np.bincount(labels, minlength=k).max() / max(1, len(labels)))
    warning = motion_warning(accuracy, metrics["motion_static_accuracy"], metrics["motion_chance"])
    if warning:
        metrics["motion_warning"] = warning
    return metrics, {**{f"{p}_pred": preds[p] for p in PROBES}, "reversed_target": swapped}
