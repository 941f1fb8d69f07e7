"""Clip transforms that match a backbone's weights and modality: crop, flip, normalise, lay out as (C, T, H, W).

One crop and one flip decision per clip (not per frame), so motion stays coherent. The input is a
raw clip from :func:`vt_models.data.modality.clip_array` (float, ``(T, H, W, C)``); a flip negates
the x component of optical flow, so a flipped leftward flow reads as rightward.
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
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_size: int
    train: bool
    hflip: bool = False
    scale: tuple[float, float] = (0.5, 1.0)
    resize_ratio: float = 256 / 224  # eval: short side = crop * ratio, then centre crop
    modality: str = "rgb"
    shake: float = 0.0  # train, flow: std of a random per-frame camera translation added to the flow (in flow units)
    stabilise: bool = False  # flow: remove each frame's median displacement (camera motion), train and eval alike
    flow_span: int = 1  # flow: stored pairs summed per clip position (applied by make_clip, which picks the positions)
    full_frame: bool = False  # eval: the whole frame resized to a square (as training crops are), not a centre crop

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """(T, H, W, C) raw clip (float; uint8 RGB is accepted too) -> (C, T, H, W) float32, normalised."""
        if clip.dtype == torch.uint8:
            clip = clip.float() / 255.0
        video = clip.permute(0, 3, 1, 2).float()  # T, C, H, W: torchvision's video layout
        if self.train:
            top, left, h, w = _random_crop_box(video.shape[-2], video.shape[-1], self.scale)
            video = F.resized_crop(video, top, left, h, w, [self.crop_size, self.crop_size], antialias=True)
            if self.hflip and torch.rand(()) < 0.5:
                video = F.horizontal_flip(video)
                if self.modality == "flow":
                    video = torch.cat([-video[:, :1], video[:, 1:]], dim=1)
            if self.shake and self.modality == "flow":
                # A shaking camera adds (about) one displacement to every pixel of a flow image; the
                # class is in how the object moves, so the model must learn to look past it.
                video = video + torch.randn(video.shape[0], 2, 1, 1) * self.shake
        elif self.full_frame:
            # Training crops cover most of the frame at aspects 3/4-4/3, squeezed to a square; a centre
            # crop of a 4:3 frame would cut a quarter of its width (and the objects moving there).
            video = F.resize(video, [self.crop_size, self.crop_size], antialias=True)
        else:
            video = F.resize(video, [round(self.crop_size * self.resize_ratio)], antialias=True)
            video = F.center_crop(video, [self.crop_size, self.crop_size])
        if self.stabilise and self.modality == "flow":
            # A panning or shaking camera adds about one displacement to every pixel; the median over the
            # frame estimates it when the moving things cover less than half of it. What is left is how
            # the scene moves relative to the camera, so the same class looks the same on a tripod and in a hand.
            video = video - video.flatten(2).median(dim=2).values[:, :, None, None]
        video = F.normalize(video, list(self.mean), list(self.std))
        return video.permute(1, 0, 2, 3).contiguous()


def _random_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
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
