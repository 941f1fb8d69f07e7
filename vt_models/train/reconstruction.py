"""Autoencoder pretraining on unlabelled video: the backbone encodes a masked clip, a small decoder
rebuilds the clean clip at coarse resolution (``pretrain.objective: autoencoder``).

Labels are never read, so any folder of videos feeds it. The target is the clip average-pooled to
``RECON_GRID`` (a few time steps x 16 x 16 cells per channel of the model's input: RGB, RGB differences
or optical flow). The decoder reads the encoder's last feature map, the one the classifier's global
pooling averages, through a 1x1 convolution that gives each feature place the ``UPSCALE`` x ``UPSCALE``
block of cells it covers (a pixel shuffle, as in sub-pixel convolution): every cell is rebuilt from the
features at its own place, so the encoder has to learn *local* descriptions of appearance or motion,
which the pooled vector the head reads then averages. (Why 16 x 16 through the shuffle rather than 8 x 8
from one value a place: fine-tuned for 30 epochs on 3 target videos a class, it scored 0.573 mean
macro-F1 over 5 seeds against 0.509 for 8 x 8; docs/measurements.md, "Autoencoder pretraining".)
A decoder from the pooled vector alone was measured first: it had to put where things are into one vector,
and its encoder scored below a random one after fine-tuning. Tube
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

RECON_GRID = (4, 16, 16)  # (time, height, width) cells of the reconstruction target
UPSCALE = 4  # each place of the feature map rebuilds a 4 x 4 block of cells (then pooled to the grid)
MASK_CELL = 8  # tube masking works on an 8 x 8 grid of cells over the frame
POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


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
    """The encoder's last feature map -> the coarse clip ``(C, *RECON_GRID)``: a 1x1 convolution per place,
    whose ``C * UPSCALE**2`` outputs are that place's block of cells (pixel shuffle).

    The map is caught on its way into the encoder's last adaptive average pooling (a forward hook):
    ``(B*T, F, h, w)`` per frame for 2D and CNN+RNN models, ``(B, F, t, h, w)`` for 3D ones.
    """

    def __init__(self, pool: nn.Module, channels: int, three_d: bool) -> None:
        super().__init__()
        self.channels, self.three_d = channels, three_d
        out = channels * UPSCALE * UPSCALE
        self.proj = nn.LazyConv3d(out, 1) if three_d else nn.LazyConv2d(out, 1)
        self._map: torch.Tensor | None = None
        pool.register_forward_hook(self._catch)

    def _catch(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._map = inputs[0]

    def forward(self, batch: int, frames: int) -> torch.Tensor:
        if self._map is None:
            raise RuntimeError("the decoder reads the feature map of a forward pass: run model.features first")
        fmap, self._map = self._map, None
        t = min(RECON_GRID[0], frames)
        out = self.proj(fmap)
        if self.three_d:  # (B, C*r*r, t, h, w) -> (B*t, C*r*r, h, w): each time step a frame, as for 2D models
            out = out.transpose(1, 2).flatten(0, 1)
        out = F.adaptive_avg_pool2d(F.pixel_shuffle(out, UPSCALE), RECON_GRID[1:]).reshape(
            batch, -1, self.channels, *RECON_GRID[1:]
        )
        return F.adaptive_avg_pool3d(out.transpose(1, 2), (t, *RECON_GRID[1:]))


def attach_decoder(model: nn.Module, channels: int, frames: int, size: int = 64) -> ReconstructionDecoder:
    """Give a :class:`~vt_models.models.network.VideoClassifier` its decoder (``model.decoder``), sized by
    one forward pass of a blank ``frames x size x size`` clip (before the optimizer sees the parameters)."""
    pools = [m for m in model.encoder.modules() if isinstance(m, POOLS)]
    if not pools:
        raise ValueError(
            f"{type(model.encoder).__name__} has no adaptive average pooling to read a feature map from: "
            "autoencoder pretraining needs a CNN backbone (2D, CNN+RNN or 3D ResNet-style)"
        )
    model.decoder = ReconstructionDecoder(pools[-1], channels, three_d=getattr(model, "family", "2d") == "3d")
    was_training = model.training
    with torch.no_grad():
        model.eval()  # BatchNorm statistics untouched
        model.features(torch.zeros(1, channels, frames, size, size))
        model.decoder(1, frames)  # materialises the lazy convolution
    model.train(was_training)
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
        model.features(tube_mask(clips, ratio, self.generator))
        return model.decoder(len(clips), clips.shape[2]).float(), target

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        clips = batch[0].to(device, non_blocking=True)
        recon, target = self._decode(model, clips, self.mask_ratio)
        return F.mse_loss(recon, target), len(clips)

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray]:
        # scored unmasked: how well the features describe the whole clip
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
