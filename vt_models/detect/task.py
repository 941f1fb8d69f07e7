"""The detection task for the generic loop: torchvision's detection losses, boxes out, COCO mAP."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

# The order matters: the loop counts evaluated items with the first key.
OUTPUT_KEYS = ("image_ids", "det_image", "det_boxes", "det_scores", "det_labels", "gt_image", "gt_boxes", "gt_labels")


class DetectionTask:
    monitor = "map"

    def __init__(
        self, classes: list[str], score_threshold: float = 0.5, train_sizes: Sequence[int] | None = None
    ) -> None:
        self.classes = list(classes)
        self.score_threshold = score_threshold
        self.train_sizes = tuple(train_sizes or ())

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, targets, _ = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with self.batch_size_drawn(model):
            losses = model(images, targets)
        # the sum in fp32 even under autocast, as torchvision's reference scripts do
        return sum(v.float() for v in losses.values()), len(images)

    @contextmanager
    def batch_size_drawn(self, model: nn.Module) -> Iterator[int | None]:
        """Multi-scale training: the detector resizes this batch to one short side drawn from ``train_sizes``.

        One size a batch, not torchvision's one a frame (its ``min_size`` tuple), which pads every batch to its
        largest frame and so saves no time. Drawn with torch's global generator: seeded, and saved with the
        loop's checkpoints, so a resumed run draws the same sizes. Outside training the detector's own size.
        """
        transform = _resize_transform(model) if self.train_sizes and model.training else None
        if transform is None:
            yield None
            return
        size = self.train_sizes[int(torch.randint(len(self.train_sizes), (1,)).item())]
        before = transform.min_size
        transform.min_size = (size,)
        try:
            yield size
        finally:
            transform.min_size = before

    def predict(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray]:
        images, targets, ids = batch
        outputs = model([im.to(device, non_blocking=True) for im in images])
        return flatten(outputs, targets, ids)

    def score(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        from vt_models.eval.detection_metrics import detection_metrics

        return detection_metrics(
            outputs["det_image"],
            outputs["det_boxes"],
            outputs["det_scores"],
            outputs["det_labels"],
            outputs["gt_image"],
            outputs["gt_boxes"],
            outputs["gt_labels"],
            outputs["image_ids"],
            self.classes,
            self.score_threshold,
        )


def _resize_transform(model: nn.Module) -> Any:
    """The detector's input transform (torchvision's ``GeneralizedRCNNTransform``: every family has one)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    found = next((m for m in model.modules() if isinstance(m, GeneralizedRCNNTransform)), None)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no torchvision detection transform: train_sizes needs one")
    return found


def flatten(
    outputs: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], ids: list[int]
) -> dict[str, np.ndarray]:
    """Per-image detections and ground truth as flat arrays (labels back to 0..K-1)."""

    def cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    det = [
        (
            i,
            o["boxes"].detach().float().cpu().numpy(),
            o["scores"].detach().float().cpu().numpy(),
            o["labels"].cpu().numpy() - 1,
        )
        for i, o in zip(ids, outputs, strict=True)
    ]
    gt = [(i, t["boxes"].cpu().numpy(), t["labels"].cpu().numpy() - 1) for i, t in zip(ids, targets, strict=True)]
    return {
        "image_ids": np.asarray(ids, np.int64),
        "det_image": cat([np.full(len(s), i) for i, _, s, _ in det], (0,), np.int64),
        "det_boxes": cat([b for _, b, _, _ in det], (0, 4), np.float64).reshape(-1, 4),
        "det_scores": cat([s for _, _, s, _ in det], (0,), np.float64),
        "det_labels": cat([lab for _, _, _, lab in det], (0,), np.int64),
        "gt_image": cat([np.full(len(lab), i) for i, _, lab in gt], (0,), np.int64),
        "gt_boxes": cat([b for _, b, _ in gt], (0, 4), np.float64).reshape(-1, 4),
        "gt_labels": cat([lab for _, _, lab in gt], (0,), np.int64),
    }
