"""Annotated frames for detection, read from the detection frames store (pixels + aligned boxes).

Training samples ``frames_per_video`` random stored frames of each video per epoch (frames of one
video are near-duplicates, so more of them per epoch mostly costs time); evaluation takes every
stored frame, or ``eval_frames`` evenly spaced ones, so that tracking can be scored on sequences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vt_models.data.extract import load_index
from vt_models.data.frames import load_boxes, load_frames
from vt_models.io.dvc import data_version


class DetectionDataError(ValueError):
    """Detection data that cannot be used; says which stage to run or what to fix."""


@dataclass(frozen=True)
class DetVideo:
    path: str
    file: Path
    num_stored: int
    frame_indices: tuple[int, ...]  # source frame of each stored position


@dataclass(frozen=True)
class DetectionData:
    classes: list[str]  # the detector's classes; model label = index + 1 (0 is background)
    records: dict[str, list[DetVideo]]
    data_version: str
    label_map: dict[str, str] = field(default_factory=dict)  # annotation label -> class, where they differ
    short_sides: list[tuple[int, int]] = field(default_factory=list)  # (stored, source) short side of each video

    def detail_lost(self, min_size: int) -> int:
        """How many videos extraction stored smaller than both their source and the detector's input
        (``min_size``): the detector upsamples them again, so the detail in between is gone."""
        return sum(stored < min(source, min_size) for stored, source in self.short_sides)

    def frames(self, split: str, train: bool, **options: Any) -> FrameBoxDataset:
        """The frames of ``split`` with their boxes under these classes (merged labels read as their class);
        ``options`` as :class:`FrameBoxDataset` takes them."""
        return FrameBoxDataset(self.records[split], self.classes, train, label_map=self.label_map, **options)


def map_label(label: str, class_map: dict[str, str] | None) -> str:
    """The detector class of annotation ``label`` under ``detect.class_map`` (``'*'``: every other label)."""
    if not class_map:
        return label
    return class_map.get(label, class_map.get("*", label))


def load_detection_data(
    frames_dir: Path | str,
    splits_path: Path | str,
    classes: list[str] | None = None,
    class_map: dict[str, str] | None = None,
) -> DetectionData:
    """Join the detection frames index and its splits; the detector's classes from ``classes`` or the data's
    labels, mapped by ``class_map`` (:func:`map_label`)."""
    frames_dir, splits_path = Path(frames_dir), Path(splits_path)
    index = load_index(frames_dir)
    if not splits_path.is_file():
        raise DetectionDataError(f"{splits_path} not found: run `vt detect split` (or `dvc repro`) first")
    videos = {v["path"]: v for v in index["videos"]}
    if any("num_boxes" not in v for v in videos.values()):
        raise DetectionDataError(
            f"{frames_dir} holds frames without boxes: run `vt detect probe` and `vt detect extract`"
        )
    labels = sorted({label for v in videos.values() for label in v.get("box_labels", [])})
    label_map = {label: map_label(label, class_map) for label in labels}
    found = sorted(set(label_map.values()))
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DetectionDataError(
                f"box labels {unknown} are not in detect.classes {classes}: re-run `vt detect probe`"
                + (f" (detect.class_map {class_map} maps the annotations' labels {labels})" if class_map else "")
            )
    splits = json.loads(splits_path.read_text(encoding="utf-8"))
    records: dict[str, list[DetVideo]] = {}
    for name, paths in splits["splits"].items():
        missing = [p for p in paths if p not in videos]
        if missing:
            raise DetectionDataError(
                f"{splits_path} lists {missing[0]} (and {len(missing) - 1} more) not in {frames_dir}: "
                "re-run `vt detect split`"
            )
        records[name] = [
            DetVideo(
                p, frames_dir / videos[p]["file"], len(videos[p]["frame_indices"]), tuple(videos[p]["frame_indices"])
            )
            for p in paths
        ]
    return DetectionData(
        list(classes) if classes is not None else found,
        records,
        data_version(frames_dir, splits_path),
        {k: v for k, v in label_map.items() if k != v},
        [
            (min(v["height"], v["width"]), min(v["src_height"], v["src_width"]))
            for v in videos.values()
            if "src_height" in v
        ],
    )


def targets_at(boxes: Any, position: int, class_index: dict[str, int]) -> dict[str, torch.Tensor]:
    """torchvision's target dict of one stored frame (labels 1..K)."""
    xyxy, labels, _ = boxes.at(position)
    return {
        "boxes": torch.as_tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor([class_index[str(x)] + 1 for x in labels], dtype=torch.int64),
    }


def evenly(n: int, k: int | None) -> list[int]:
    """``k`` evenly spaced positions of ``n`` (all of them when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def frames_per_video(videos: int, per_video: int, min_epoch_frames: int) -> int:
    """Training frames per video per epoch: ``per_video``, or more when ``videos`` of them would give fewer than
    ``min_epoch_frames``. Why: a few long recordings (MOT-style footage: 5 videos, 64 stored frames each) at 2
    frames a video make 10 frames an epoch, too few optimiser steps to move a detector to a new domain."""
    if videos <= 0:
        return per_video
    return max(per_video, -(-min_epoch_frames // videos))


class FrameBoxDataset(Dataset):
    """``(image (3, H, W) float in [0, 1], target, image_id)`` items over stored frames."""

    def __init__(
        self,
        videos: list[DetVideo],
        classes: list[str],
        train: bool,
        frames_per_video: int = 4,
        eval_frames: int | None = None,
        hflip: bool = False,
        label_map: dict[str, str] | None = None,
    ) -> None:
        self.videos = videos
        self.class_index = {c: i for i, c in enumerate(classes)}
        # merged annotation labels (detect.class_map) read as their class
        self.class_index.update({label: self.class_index[c] for label, c in (label_map or {}).items()})
        self.train = train
        self.hflip = hflip
        if train:
            self.items = [(v, -1) for v, _ in enumerate(videos) for _ in range(frames_per_video)]
        else:
            self.items = [(v, p) for v, video in enumerate(videos) for p in evenly(video.num_stored, eval_frames)]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_videos(self) -> int:
        """The videos behind the frames (frames of one video are not independent samples)."""
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        v, pos = self.items[i]
        video = self.videos[v]
        if pos < 0:  # training: a random stored frame (torch RNG, so resume replays it)
            pos = int(torch.randint(video.num_stored, (1,)))
        image = torch.from_numpy(load_frames(video.file, select=[pos]).frames[0]).permute(2, 0, 1).float().div_(255)
        target = targets_at(load_boxes(video.file), pos, self.class_index)
        if self.train:
            image, target = augment(image, target, self.hflip)
        return image, target, i


def augment(
    image: torch.Tensor, target: dict[str, torch.Tensor], hflip: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Photometric jitter (lighting changes) and an optional horizontal flip with its boxes."""
    gain = 1 + (torch.rand(1) - 0.5) * 0.4
    bias = (torch.rand(1) - 0.5) * 0.2
    image = (image * gain + bias).clamp_(0, 1)
    if hflip and torch.rand(1) < 0.5:
        width = image.shape[-1]
        image = image.flip(-1)
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        target = {**target, "boxes": boxes}
    return image, target


def collate(batch: list[Any]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[int]]:
    images, targets, ids = zip(*batch, strict=True)
    return list(images), list(targets), list(ids)
