"""Clip transforms that match a backbone's weights: crop, flip, normalise, lay out as (C, T, H, W).

One crop and one flip decision per clip (not per frame), so motion stays coherent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class ClipTransform:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_size: int
    train: bool
    hflip: bool = False
    scale: tuple[float, float] = (0.5, 1.0)
    resize_ratio: float = 256 / 224  # eval: short side = crop * ratio, then centre crop

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, H, W, C) uint8 -> (C, T, H, W) float32, normalised."""
        video = frames.permute(0, 3, 1, 2)  # T, C, H, W: torchvision's video layout
        if self.train:
            top, left, h, w = _random_crop_box(video.shape[-2], video.shape[-1], self.scale)
            video = F.resized_crop(video, top, left, h, w, [self.crop_size, self.crop_size], antialias=True)
            if self.hflip and torch.rand(()) < 0.5:
                video = F.horizontal_flip(video)
        else:
            video = F.resize(video, [round(self.crop_size * self.resize_ratio)], antialias=True)
            video = F.center_crop(video, [self.crop_size, self.crop_size])
        video = F.normalize(F.to_dtype(video, torch.float32, scale=True), list(self.mean), list(self.std))
        return video.permute(1, 0, 2, 3).contiguous()


def _random_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box, drawn from torch's RNG (seeded per worker)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(()).uniform_(*scale))
        aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio)))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, ()))
            left = int(torch.randint(0, width - w + 1, ()))
            return top, left, h, w
    side = min(height, width)  # fallback: centre square
    return (height - side) // 2, (width - side) // 2, side, side
