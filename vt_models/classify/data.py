"""Clips for training and evaluation, read from the extracted frames.

A video's stored frames (e.g. 16, uniform over the video) are split into ``clip_len`` equal
segments; training takes a random frame from each segment (temporal jitter, TSN-style), evaluation
takes segment centres, or several evenly shifted views for multi-clip testing. The transform's
modality decides what a position holds (a frame, or the motion from it to the next stored frame;
see :mod:`vt_models.data.modality`). Training can draw several clips per video per epoch
(``clips_per_video``), so a small data set still gives an epoch enough optimizer steps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vt_models.data.extract import load_index
from vt_models.data.frames import StoredVideo
from vt_models.data.modality import FrameSource, clip_array, is_motion, positions_available, reverse_label_map
from vt_models.io.dvc import data_version
from vt_models.models.transforms import ClipTransform


def clip_positions(num_stored: int, clip_len: int, train: bool, view: int = 0, views: int = 1) -> np.ndarray:
    """Which stored frames make a clip. Random within segments for training (torch RNG)."""
    seg = num_stored / clip_len
    if train:
        offsets = torch.rand(clip_len).numpy()
    else:
        offsets = np.full(clip_len, (view + 0.5) / views)
    pos = np.floor((np.arange(clip_len) + offsets) * seg).astype(np.int64)
    return np.clip(pos, 0, num_stored - 1)


UNLABELLED = -1  # the label id of a video in an unlabelled data set (datasets.<name>.labelled: false)


class UnlabelledError(ValueError):
    """A step that scores or fits labels, asked to run on an unlabelled data set."""


def require_labels(classes: list[str], dataset: str, needs: str) -> None:
    """Raise :class:`UnlabelledError` (naming the data set and what to do instead) when ``classes`` is empty."""
    if not classes:
        raise UnlabelledError(f"{dataset!r} has no labels (datasets.{dataset}.labelled: false): {needs}")


@dataclass(frozen=True)
class VideoRecord:
    path: str
    label: int
    file: Path
    num_stored: int


def make_clip(
    source: FrameSource, transform: ClipTransform, clip_len: int, train: bool, view: int = 0, views: int = 1
) -> torch.Tensor:
    """One model input ``(C, T, H, W)`` from a video's stored frames: the single recipe for training,
    evaluation, the motion probes and serving."""
    span = transform.flow_span if transform.modality == "flow" else 1
    available = positions_available(source.num_stored, transform.modality)
    if span <= 1:
        pos = clip_positions(available, clip_len, train, view, views)
        return transform(torch.from_numpy(clip_array(source, pos, transform.modality)))
    # Flow over ``span`` consecutive stored pairs: the displacement from frame p to frame p + span, as
    # the sum of the pairs' flows. Positions are drawn so that the last pair summed still exists.
    span = min(span, available)
    pos = clip_positions(available - span + 1, clip_len, train, view, views)
    every = (pos[:, None] + np.arange(span)[None, :]).reshape(-1)
    flows = clip_array(source, every, "flow")
    summed = flows.reshape(len(pos), span, *flows.shape[1:]).sum(axis=1)
    return transform(torch.from_numpy(summed))


def reverse_clip(clip: torch.Tensor, modality: str) -> torch.Tensor:
    """A model input ``(C, T, H, W)`` played backwards. Motion inputs also change sign: the flow from
    frame t+1 back to t is about minus the flow from t to t+1 (exact for frame differences), and
    their normalisation has zero mean, so negating the normalised values is the same thing."""
    backwards = clip.flip(1)
    return -backwards if is_motion(modality) else backwards


def reverse_partners(classes: list[str], pairs: list[tuple[str, str]]) -> list[int]:
    """Per label id, the label id of its partner under time reversal; -1 for a class in no pair, which
    training never reverses (whether its clips look the same backwards is not known)."""
    swapped = reverse_label_map(classes, pairs)
    return [int(j) if j != i else -1 for i, j in enumerate(swapped)]


class DecodedCache:
    """Decoded frames files kept in memory up to ``max_bytes`` (least recently used out first).

    Decoding a video's JPEGs costs more than a CPU training step on small clips; every epoch (and
    every extra clip per video) reads the same files again, so the small data sets this product
    fine-tunes on are decoded once. Each data-loader worker holds its own cache. A file is known by
    its path, size and modification time, so a re-extracted video is decoded again.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: dict[tuple[str, str, int, int], np.ndarray] = {}
        self._bytes = 0

    def get(self, rec: VideoRecord, kind: str) -> np.ndarray:
        st = os.stat(rec.file)
        key = (str(rec.file), kind, st.st_size, st.st_mtime_ns)
        hit = self._items.pop(key, None)
        if hit is None:
            video = StoredVideo(rec.file, rec.num_stored)
            everything = np.arange(positions_available(rec.num_stored, "flow" if kind == "flow" else "rgb"))
            hit = video.flow(everything) if kind == "flow" else video.frames(everything)
            self._bytes += hit.nbytes
            while self._items and self._bytes > self.max_bytes:
                self._bytes -= self._items.pop(next(iter(self._items))).nbytes
        self._items[key] = hit  # most recent last
        return hit


_SHARED: DecodedCache | None = None


def shared_cache(max_bytes: int) -> DecodedCache:
    """The process's one cache, at least ``max_bytes`` big: the runs of one process (CV folds, the transfer
    report's settings, train then validation) read the same videos and decode each once."""
    global _SHARED
    if _SHARED is None:
        _SHARED = DecodedCache(max_bytes)
    _SHARED.max_bytes = max(_SHARED.max_bytes, max_bytes)
    return _SHARED


class _CachedVideo:
    """A :class:`FrameSource` over a record's decoded arrays."""

    def __init__(self, rec: VideoRecord, cache: DecodedCache) -> None:
        self.rec, self.cache, self.num_stored = rec, cache, rec.num_stored

    def frames(self, positions: np.ndarray) -> np.ndarray:
        return self.cache.get(self.rec, "frames")[np.asarray(positions, np.int64)]

    def flow(self, positions: np.ndarray) -> np.ndarray:
        data = self.cache.get(self.rec, "flow")
        return data[np.minimum(np.asarray(positions, np.int64), len(data) - 1)]


class ClipDataset(Dataset):
    """``(clip (C, T, H, W) float, label)`` per video; ``views`` > 1 gives every view of each video.

    Training with ``repeats`` > 1 draws that many random clips of every video per epoch.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        transform: ClipTransform,
        clip_len: int,
        train: bool,
        views: int = 1,
        repeats: int = 1,
        cache_mb: int = 0,
        partners: list[int] | None = None,
        reverse_p: float = 0.0,
    ) -> None:
        self.records = records
        # training only: partners[label] is the label of the class a backwards clip shows (-1: none)
        self.partners = partners if train and reverse_p > 0 else None
        self.reverse_p = reverse_p
        self.cache = shared_cache(cache_mb * 2**20) if cache_mb > 0 else None
        self.transform = transform
        self.clip_len = clip_len
        self.train = train
        self.views = views
        self.repeats = repeats if train else 1

    def __len__(self) -> int:
        return len(self.records) * self.views * self.repeats

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = i % (len(self.records) * self.views)
        rec = self.records[i // self.views]
        source = _CachedVideo(rec, self.cache) if self.cache is not None else StoredVideo(rec.file, rec.num_stored)
        clip = make_clip(source, self.transform, self.clip_len, self.train, i % self.views, self.views)
        if self.partners is not None and self.partners[rec.label] >= 0 and torch.rand(()) < self.reverse_p:
            return reverse_clip(clip, self.transform.modality), self.partners[rec.label]
        return clip, rec.label

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records] * self.repeats

    @property
    def num_videos(self) -> int:
        """The videos behind the items (views and repeats are not independent samples)."""
        return len(self.records)


class Unlabelled(Dataset):
    """A clip data set with its labels hidden, ``(clip, -1)``: the target stream of domain adaptation."""

    def __init__(self, clips: ClipDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.clips[i][0], -1


@dataclass(frozen=True)
class SplitData:
    """The videos of one data set, by split, with the class list that fixes label ids (empty for an
    unlabelled data set, whose records carry :data:`UNLABELLED`)."""

    classes: list[str]
    records: dict[str, list[VideoRecord]]  # train / val / test
    folds: list[list[str]]
    data_version: str

    def subset(self, paths: list[str]) -> list[VideoRecord]:
        by_path = {r.path: r for recs in self.records.values() for r in recs}
        return [by_path[p] for p in paths]


def load_split_data(frames_dir: Path | str, splits_path: Path | str) -> SplitData:
    """Join the frames index and the splits file into labelled records."""
    frames_dir, splits_path = Path(frames_dir), Path(splits_path)
    index = load_index(frames_dir)
    if not splits_path.is_file():
        raise FileNotFoundError(f"{splits_path} not found: run `vt split` (or `dvc repro`) first")
    splits = json.loads(splits_path.read_text(encoding="utf-8"))
    classes = list(splits["classes"])
    by_path: dict[str, dict[str, Any]] = {v["path"]: v for v in index["videos"]}
    records: dict[str, list[VideoRecord]] = {}
    for name, paths in splits["splits"].items():
        missing = [p for p in paths if p not in by_path]
        if missing:
            raise ValueError(
                f"{splits_path} lists {len(missing)} video(s) not in {frames_dir}/index.json (e.g. {missing[0]}): "
                "re-run `vt split`"
            )
        records[name] = [
            VideoRecord(
                p,
                classes.index(by_path[p]["label"]) if classes else UNLABELLED,
                frames_dir / by_path[p]["file"],
                len(by_path[p]["frame_indices"]),
            )
            for p in paths
        ]
    return SplitData(classes, records, splits.get("folds", []), data_version(frames_dir, splits_path))
