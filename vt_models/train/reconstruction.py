"""Autoencoder pretraining on unlabelled video: the backbone encodes a masked clip, a small decoder
rebuilds the clean clip at coarse resolution (``pretrain.objective: autoencoder``).

Labels are never read, so any folder of videos feeds it. The target is the clip average-pooled to
``RECON_GRID`` (a few time steps x 8 x 8 cells per channel of the model's input: RGB, RGB differences
or optical flow), decoded from the *pooled* feature vector that the classifier head will later read.
That bottleneck is the point: to rebuild where and how things move from one vector, the encoder
has to put the motion pattern into it, which is what fine-tuning on few labels then needs. Tube
masking (the same cells hidden in every frame, as VideoMAE does) keeps a cell from being copied from
its neighbour in time.

The decoder is a module of the model (``model.decoder``): the checkpoint is a plain classifier
checkpoint plus ``decoder.*`` tensors, and fine-tuning from it (``weights: source`` or its file) keeps
the encoder, drops the decoder and starts a new head, like any other pretrained weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RECON_GRID = (4, 8, 8)  # (time, height, width) cells of the reconstruction target
MASK_CELL = 8  # tube masking works on an 8 x 8 grid of cells over the frame


def recon_target(clips: torch.Tensor) -> torch.Tensor:
    """The clean clip ``(B, C, T, H, W)`` average-pooled to ``(B, C, *RECON_GRID)`` (T shorter: all of it)."""
    t = min(RECON_GRID[0], clips.shape[2])
    return F.adaptive_avg_pool3d(clips.float(), (t, *RECON_GRID[1:]))


def tube_mask(clips: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero ``ratio`` of an 8 x 8 grid of cells, the same cells in every frame of a clip (per clip)."""
    if ratio <= 0:
        return clips
    b, _, _, h, w = clips.shape
    keep = (torch.rand(b, 1, 1, MASK_CELL, MASK_CELL, generator=generator) >= ratio).to(clips.device, clips.dtype)
    # nearest upsampling of the cell grid to the frame (frames need not divide by 8)
    keep = F.interpolate(keep.squeeze(2), size=(h, w), mode="nearest").unsqueeze(2)
    return clips * keep


class ReconstructionDecoder(nn.Module):
    """Pooled feature vector -> the coarse clip ``(C, *RECON_GRID)``: a two-layer MLP."""

    def __init__(self, feat_dim: int, channels: int, frames: int, hidden: int = 256) -> None:
        super().__init__()
        self.shape = (channels, min(RECON_GRID[0], frames), *RECON_GRID[1:])
        self.net = nn.Sequential(nn.Linear(feat_dim, hidden), nn.GELU(), nn.Linear(hidden, int(np.prod(self.shape))))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).reshape(len(feats), *self.shape)


def attach_decoder(model: nn.Module, channels: int, frames: int) -> ReconstructionDecoder:
    """Give a classifier (anything with ``features`` and a ``head`` ending in a Linear) its decoder."""
    model.decoder = ReconstructionDecoder(model.head[-1].in_features, channels, frames)
    return model.decoder


class ReconstructionTask:
    """Masked/denoising reconstruction for the generic loop: the loss is the MSE between the decoded
    and the clean coarse clip; the monitored score is R^2 (1 - MSE / variance of the target), so 0 is
    "predicts the mean clip" and 1 is perfect, whatever the modality's scale."""

    monitor = "recon_r2"

    def __init__(self, mask_ratio: float = 0.5, seed: int = 0) -> None:
        self.mask_ratio = mask_ratio
        self.generator = torch.Generator().manual_seed(seed)

    def _decode(self, model: nn.Module, clips: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        target = recon_target(clips)
        recon = model.decoder(model.features(tube_mask(clips, ratio, self.generator)))
        return recon.float(), target

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        clips = batch[0].to(device, non_blocking=True)
        recon, target = self._decode(model, clips, self.mask_ratio)
        return F.mse_loss(recon, target), len(clips)

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray]:
        # scored unmasked: how well the feature vector describes the whole clip
        clips = batch[0].to(device, non_blocking=True)
        recon, target = self._decode(model, clips, 0.0)
        return {
            "sq_err": (recon - target).pow(2).flatten(1).sum(1).cpu().numpy(),
            "sq_dev": (target - target.mean(0, keepdim=True)).pow(2).flatten(1).sum(1).cpu().numpy(),
            "cells": np.full(len(clips), target[0].numel(), np.int64),
        }

    def score(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        err, dev = float(outputs["sq_err"].sum()), float(outputs["sq_dev"].sum())
        # the deviation from the batch means, summed over batches: slightly over the split's variance
        return {
            "loss": err / max(1, int(outputs["cells"].sum())),
            "recon_r2": 1.0 - err / dev if dev > 0 else 0.0,
        }
