"""One video classifier module for every backbone family.

Input is always a clip batch ``(B, C, T, H, W)``:
- ``2d``: an ImageNet CNN runs on every frame, features are averaged over time (TSN; with a
  temporal shift inside the CNN for TSM, see :mod:`vt_models.models.tsm`);
- ``rnn``: the same per-frame features go through an LSTM/GRU, its last state is classified;
- ``3d``: a video network (R3D, R(2+1)D, S3D, MViT, Swin3D) sees the whole clip.
The encoder is the torchvision network with its classifier replaced by ``Identity``; the new
head is ``head = Sequential(Dropout, Linear)``, so checkpoint keys are stable across families.
"""

from __future__ import annotations

import torch
from torch import nn


class VideoClassifier(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        feat_dim: int,
        num_classes: int,
        family: str,
        dropout: float = 0.5,
        rnn: str | None = None,
        rnn_hidden: int = 256,
        stage_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if family not in ("2d", "rnn", "3d"):
            raise ValueError(f"unknown family {family!r}")
        self.family = family
        self.encoder = encoder
        self.temporal: nn.Module | None = None
        out_dim = feat_dim
        if family == "rnn":
            cell = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn or "lstm"]
            self.temporal = cell(feat_dim, rnn_hidden, batch_first=True)
            out_dim = rnn_hidden
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(out_dim, num_classes))
        self._stage_names = list(stage_names or [])

    @property
    def num_classes(self) -> int:
        return self.head[1].out_features

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 5:
            raise ValueError(f"expected clips of shape (B, C, T, H, W), got {tuple(clips.shape)}")
        if self.family == "3d":
            return self.encoder(clips)
        b, c, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(b * t, c, h, w)
        shift = getattr(self.encoder, "tsm_state", None)
        if shift is not None:
            shift.frames = t  # the temporal shift regroups the frames into clips
        per_frame = self.encoder(frames).reshape(b, t, -1)
        if self.temporal is None:
            return per_frame.mean(dim=1)
        out, _ = self.temporal(per_frame)
        return out[:, -1]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(clips))

    def stages(self) -> list[nn.Module]:
        """Encoder stages from input to output, for partial fine-tuning (the RNN is head, not stage)."""
        mods = dict(self.encoder.named_modules())
        return [mods[name] for name in self._stage_names]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
