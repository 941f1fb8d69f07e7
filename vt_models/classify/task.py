"""The video classification task for the generic loop: cross-entropy, softmax, metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vt_models.eval.metrics import classification_metrics


class ClassificationTask:
    monitor = "macro_f1"

    def __init__(
        self, num_classes: int, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        self.num_classes = num_classes
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self._criterion: nn.Module | None = None

    def _loss_fn(self, device: torch.device) -> nn.Module:
        if self._criterion is None:
            weight = self.class_weights.to(device) if self.class_weights is not None else None
            self._criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)
        return self._criterion

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        clips, labels = batch
        logits = model(clips.to(device, non_blocking=True))
        # the loss in fp32 even under autocast: softmax over few classes is cheap and stable
        return self._loss_fn(device)(logits.float(), labels.to(device, non_blocking=True)), len(labels)

    def loss_and_features(
        self, model: nn.Module, batch: Any, target: Any, device: torch.device
    ) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor | None]:
        """The loss of a labelled batch and the pooled features (``model.features``) of its clips and of a
        ``target`` batch's clips (its labels are unknown, -1), from one forward pass over both (no target:
        its features are None)."""
        clips, labels = batch
        n = len(labels)
        inputs = clips if target is None else torch.cat([clips, target[0]])
        feats = model.features(inputs.to(device, non_blocking=True))
        logits = model.head(feats[:n])
        loss = self._loss_fn(device)(logits.float(), labels.to(device, non_blocking=True))
        return loss, n, feats[:n].float(), None if target is None else feats[n:].float()

    def predict(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray]:
        clips, labels = batch
        probs = torch.softmax(model(clips.to(device, non_blocking=True)).float(), dim=1)
        return {"probs": probs.cpu().numpy(), "labels": np.asarray(labels)}

    def score(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        probs, labels = outputs["probs"], outputs["labels"].astype(np.int64)
        top_k = tuple(k for k in (1, 5) if k <= self.num_classes)
        scores = classification_metrics(labels, probs.argmax(1), self.num_classes, probs, top_k)
        picked = probs[np.arange(len(labels)), labels] if len(labels) else np.ones(1)
        scores["loss"] = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
        return scores


class EmbeddingTask(ClassificationTask):
    """Predictions plus ``features``: the pooled features the head reads (``model.features``), one pass."""

    def predict(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray]:
        clips, labels = batch
        feats = model.features(clips.to(device, non_blocking=True))
        probs = torch.softmax(model.head(feats).float(), dim=1)
        return {"probs": probs.cpu().numpy(), "labels": np.asarray(labels), "features": feats.float().cpu().numpy()}


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, ``n / (k * count)``, like sklearn's ``class_weight='balanced'``."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    weights = np.divide(len(labels), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)
