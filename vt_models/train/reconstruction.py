"""Autoencoder pretraining on unlabelled video: the backbone encodes a corrupted clip, a small decoder
rebuilds the clean clip at coarse resolution (``pretrain.objective: autoencoder``).

Labels are never read, so any folder of videos feeds it. The target is the clean clip average-pooled to
``steps`` time steps x ``RECON_CELLS`` (16 x 16) cells per channel of the model's input (RGB, RGB
differences or optical flow); by default one step, each cell's motion averaged over the clip.

The corruption is a denoising autoencoder's: tube masking (the same cells hidden in every frame, as VideoMAE
does, so that a cell cannot be copied from its neighbour in time), then for flow a random camera motion
added, then all but ``keep_frames`` of the clip's frames zeroed. The encoder has to tell the motion that
lasts through the clip from one frame's noise and from the camera's own motion. (Each of the two last
corruptions fine-tuned better than the mask alone, and together, with one time step, +0.13 over scratch on
average at three pretraining seeds against the mask alone's +0.08: docs/measurements.md, "Autoencoder
pretraining".)

The decoder reads the encoder's last feature map, the one the classifier's global pooling averages, through
a 1x1 convolution that gives each feature place the ``UPSCALE`` x ``UPSCALE`` block of cells it covers (a
pixel shuffle, as in sub-pixel convolution): every cell is rebuilt from the features at its own place, so
the encoder has to learn *local* descriptions of appearance or motion, which the pooled vector the head
reads then averages. (Why 16 x 16 through the shuffle rather than 8 x 8 from one value a place: fine-tuned
for 30 epochs on 3 target videos a class, it scored 0.573 mean macro-F1 over 5 seeds against 0.509 for
8 x 8.) A decoder from the pooled vector alone was measured first: it had to put where things are into one
vector, and its encoder scored below a random one after fine-tuning.

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

RECON_CELLS = (16, 16)  # (height, width) cells of the reconstruction target
UPSCALE = 4  # each place of the feature map rebuilds a 4 x 4 block of cells (then pooled to the grid)
MASK_CELL = 8  # tube masking works on an 8 x 8 grid of cells over the frame
POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def recon_target(clips: torch.Tensor, steps: int) -> torch.Tensor:
    """The clean clip ``(B, C, T, H, W)`` average-pooled to ``(B, C, steps, *RECON_CELLS)`` (T shorter: all of it)."""
    return F.adaptive_avg_pool3d(clips.float(), (min(steps, clips.shape[2]), *RECON_CELLS))


def tube_mask(clips: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero ``ratio`` of an 8 x 8 grid of cells, the same cells in every frame of a clip (per clip)."""
    if ratio <= 0:
        return clips
    b, _, _, h, w = clips.shape
    keep = (torch.rand(b, 1, 1, MASK_CELL, MASK_CELL, generator=generator) >= ratio).to(clips.device, clips.dtype)
    # nearest upsampling of the cell grid to the frame (frames need not divide by 8)
    keep = F.interpolate(keep.squeeze(2), size=(h, w), mode="nearest").unsqueeze(2)
    return clips * keep


def camera_motion(clips: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flow clips ``(B, 2, T, H, W)`` plus one random global affine flow field each, the same in every frame
    (u = a + b x + c y, v = d + e x + f y over x, y in [-1, 1], the six numbers drawn from N(0, std^2)): a
    camera's pan, turn, zoom or shear, which the encoder must learn to see past."""
    if std <= 0:
        return clips
    b, c, _, h, w = clips.shape
    if c != 2:
        raise ValueError(f"camera motion is a flow field: clips need 2 channels (u, v), got {c}")
    # the six numbers come from the (CPU) generator, so a seed draws the same cameras on any device; the
    # field itself is built where the clips are, without a full-size copy across
    coef = (torch.randn(b, 2, 3, generator=generator) * std).to(clips.device)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=clips.device), torch.linspace(-1, 1, w, device=clips.device), indexing="ij"
    )
    field = torch.einsum("bck,khw->bchw", coef, torch.stack([torch.ones_like(xs), xs, ys]))
    return clips + field[:, :, None].to(clips.dtype)


def drop_frames(clips: torch.Tensor, keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero all but ``keep`` frames of each clip ``(B, C, T, H, W)``, drawn per clip (0 or >= T: all kept)."""
    b, _, t = clips.shape[:3]
    if keep <= 0 or keep >= t:
        return clips
    kept = torch.rand(b, t, generator=generator).argsort(1)[:, :keep]
    weights = torch.zeros(b, t).scatter_(1, kept, 1.0).to(clips)
    return clips * weights[:, None, :, None, None]


class ReconstructionDecoder(nn.Module):
    """The encoder's last feature map -> the coarse clip ``(C, steps, *RECON_CELLS)``: a 1x1 convolution per place,
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

    def forward(self, batch: int, frames: int, steps: int) -> torch.Tensor:
        if self._map is None:
            raise RuntimeError("the decoder reads the feature map of a forward pass: run model.features first")
        fmap, self._map = self._map, None
        out = self.proj(fmap)
        if self.three_d:  # (B, C*r*r, t, h, w) -> (B*t, C*r*r, h, w): each time step a frame, as for 2D models
            out = out.transpose(1, 2).flatten(0, 1)
        out = F.adaptive_avg_pool2d(F.pixel_shuffle(out, UPSCALE), RECON_CELLS).reshape(
            batch, -1, self.channels, *RECON_CELLS
        )
        return F.adaptive_avg_pool3d(out.transpose(1, 2), (min(steps, frames), *RECON_CELLS))


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
        model.decoder(1, frames, 1)  # materialises the lazy convolution
    model.train(was_training)
    return model.decoder


class ReconstructionTask:
    """Denoising reconstruction for the generic loop: the loss is the MSE between the clip decoded from its
    corrupted copy and the clean coarse clip; the monitored score is R^2 (1 - MSE / variance of the target),
    so 0 is "predicts the mean clip" and 1 is perfect, whatever the modality's scale.

    Validation scores the task as trained, corrupted, with its own generator re-seeded after every pass
    (in :meth:`score`), so each epoch is scored on the same corrupted clips. (Scored on whole clips, an
    encoder that has only ever seen 2 of 8 frames rebuilds them worse than the mean clip: R^2 below 0.)
    The defaults here are the plain masked autoencoder; ``pretrain`` sets the product's (the runner passes
    ``keep_frames``, ``camera_noise`` and ``recon_steps`` from it).
    """

    monitor = "recon_r2"

    def __init__(
        self, mask_ratio: float = 0.5, seed: int = 0, keep_frames: int = 0, camera_noise: float = 0.0, steps: int = 4
    ) -> None:
        self.mask_ratio, self.keep_frames, self.camera_noise, self.steps = mask_ratio, keep_frames, camera_noise, steps
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.val_generator = torch.Generator().manual_seed(seed + 1)

    def corrupt(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The encoder's input: tube mask, then camera motion (flow), then all but ``keep_frames`` frames zeroed."""
        clips = tube_mask(clips, self.mask_ratio, generator)
        clips = camera_motion(clips, self.camera_noise, generator)
        return drop_frames(clips, self.keep_frames, generator)

    def _decode(
        self, model: nn.Module, clips: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        target = recon_target(clips, self.steps)
        model.features(self.corrupt(clips, generator))
        return model.decoder(len(clips), clips.shape[2], self.steps).float(), target

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        clips = batch[0].to(device, non_blocking=True)
        recon, target = self._decode(model, clips, self.generator)
        return F.mse_loss(recon, target), len(clips)

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray]:
        clips = batch[0].to(device, non_blocking=True)
        recon, target = self._decode(model, clips, self.val_generator)
        return {
            "sq_err": (recon - target).pow(2).flatten(1).sum(1).cpu().numpy(),
            "sq_dev": (target - target.mean(0, keepdim=True)).pow(2).flatten(1).sum(1).cpu().numpy(),
            "cells": np.full(len(clips), target[0].numel(), np.int64),
        }

    def score(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        self.val_generator.manual_seed(self.seed + 1)  # the next pass draws the same corruptions
        err, dev = float(outputs["sq_err"].sum()), float(outputs["sq_dev"].sum())
        # the deviation from the batch means, summed over batches: slightly over the split's variance
        return {
            "loss": err / max(1, int(outputs["cells"].sum())),
            "recon_r2": 1.0 - err / dev if dev > 0 else 0.0,
        }
