"""Predict labels for video files or decoded frames with a self-describing checkpoint.

Frames go through the same functions as training data (``decode_sampled``, as `vt extract` stores them,
``make_clip`` with the checkpoint's modality and eval transform), so serving sees what training saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vt_models.classify.data import make_clip
from vt_models.config import ExtractConfig
from vt_models.data.frames import decode_sampled
from vt_models.data.modality import MemoryFrames
from vt_models.models.builder import model_from_checkpoint
from vt_models.models.checkpoint import load_checkpoint, weights_only


class VideoPredictor:
    def __init__(self, ckpt: dict[str, Any], device: str = "cpu", views: int = 3) -> None:
        self.model, transforms = model_from_checkpoint(ckpt)
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.transform = transforms.eval
        self.classes: list[str] = list(ckpt["classes"])
        self.clip_len: int = int(ckpt["clip_len"])
        self.extract = ExtractConfig.model_validate(ckpt["extract"])
        self.views = views
        self.meta = {k: v for k, v in weights_only(ckpt).items() if k != "model"}

    @classmethod
    def from_path(cls, path: Path | str, device: str = "cpu", views: int = 3) -> VideoPredictor:
        return cls(load_checkpoint(path), device=device, views=views)

    def frames_from_video(self, path: Path | str) -> np.ndarray:
        """Decode and sample a video exactly as `vt extract` does for training data."""
        return decode_sampled(path, self.extract).frames

    @torch.no_grad()
    def predict_frames(self, frames: np.ndarray) -> np.ndarray:
        """Class probabilities for one video's frames (T, H, W, 3) uint8, averaged over views."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got shape {frames.shape}")
        source = MemoryFrames(frames)
        clips = [
            make_clip(source, self.transform, self.clip_len, train=False, view=v, views=self.views)
            for v in range(self.views)
        ]
        logits = self.model(torch.stack(clips).to(self.device)).float()
        return torch.softmax(logits, dim=1).mean(0).cpu().numpy()

    def predict_video(self, path: Path | str) -> np.ndarray:
        return self.predict_frames(self.frames_from_video(path))

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.classes[i], float(probs[i])) for i in order]
