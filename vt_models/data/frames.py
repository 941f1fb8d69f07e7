"""Which frames to keep, and the compact one-file-per-video store they go in.

A video's sampled frames are JPEG-encoded and packed into a single ``.npz`` (bytes plus
offsets), so DVC versions a few hundred files instead of tens of thousands of loose JPEGs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vt_models.config import ExtractConfig
from vt_models.io.files import atomic_write_bytes
from vt_models.video.decode import VideoInfo, open_video


def sample_indices(num_frames: int, video_fps: float, cfg: ExtractConfig) -> np.ndarray:
    """Frame indices to keep from a video of ``num_frames`` frames.

    - ``uniform``: ``num_frames`` frames spread evenly (segment centres) over the video;
    - ``segments``: TSN-style, ``num_segments`` equal segments, ``frames_per_segment``
      consecutive frames at each segment's centre (short clips for 3D networks);
    - ``fps``: every ``video_fps / fps``-th frame, at most ``max_frames`` from the middle.
    Videos shorter than asked repeat frames rather than fail (probe already dropped too-short ones).
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if cfg.mode == "uniform":
        n = cfg.num_frames
        idx = np.floor((np.arange(n) + 0.5) * num_frames / n)
    elif cfg.mode == "segments":
        seg_len = num_frames / cfg.num_segments
        centres = (np.arange(cfg.num_segments) + 0.5) * seg_len
        starts = np.floor(centres - cfg.frames_per_segment / 2)
        idx = (starts[:, None] + np.arange(cfg.frames_per_segment)[None, :]).reshape(-1)
    else:
        step = (video_fps / cfg.fps) if video_fps > 0 else 1.0
        idx = np.floor(np.arange(0, num_frames, max(step, 1.0)))
        if len(idx) > cfg.max_frames:
            start = (len(idx) - cfg.max_frames) // 2
            idx = idx[start : start + cfg.max_frames]
    return np.clip(idx, 0, num_frames - 1).astype(np.int64)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (T, H, W, 3) so min(H, W) == ``short_side``, keeping the aspect ratio."""
    h, w = frames.shape[1:3]
    scale = short_side / min(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if (new_h, new_w) == (h, w):
        return frames
    out = np.empty((frames.shape[0], new_h, new_w, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0))
    return out


@dataclass(frozen=True)
class StoredFrames:
    frames: np.ndarray  # (T, H, W, 3) uint8
    frame_indices: np.ndarray  # positions in the source video
    src_size: tuple[int, int]  # (height, width) of the source video


@dataclass(frozen=True)
class SampledVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8, short side resized to ``cfg.short_side``
    indices: np.ndarray  # the source frame of each
    src_size: tuple[int, int]  # (height, width) as decoded
    info: VideoInfo


def decode_sampled(
    path: Path | str, cfg: ExtractConfig | Callable[[VideoInfo], ExtractConfig], backend: str = "auto"
) -> SampledVideo:
    """Decode, sample and resize one video as ``cfg`` says: `vt extract` stores exactly this, and both
    predictors feed exactly this to a model, so serving sees what training saw. ``cfg`` may depend on the
    video (a function of its :class:`VideoInfo`, e.g. its frame rate)."""
    reader = open_video(path, backend=backend)
    if callable(cfg):
        cfg = cfg(reader.info)
    indices = sample_indices(reader.info.num_frames, reader.info.fps, cfg)
    frames = reader.read(indices)
    return SampledVideo(resize_short_side(frames, cfg.short_side), indices, frames.shape[1:3], reader.info)


def _pack_jpeg(images: list[np.ndarray], quality: int) -> tuple[np.ndarray, np.ndarray]:
    """JPEG-encode images (RGB or grey) into one byte array plus offsets."""
    blobs = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return (np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)), offsets


def _unpack_jpeg(data: np.ndarray, offsets: np.ndarray, positions: list[int], mode: str) -> np.ndarray:
    return np.stack(
        [
            np.asarray(Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())).convert(mode))
            for i in positions
        ]
    )


def save_frames(
    path: Path,
    frames: np.ndarray,
    frame_indices: np.ndarray,
    src_size: tuple[int, int],
    quality: int,
    boxes: dict[str, np.ndarray] | None = None,
    flow: np.ndarray | None = None,
) -> Path:
    """Pack JPEG-encoded frames (and their boxes, see :func:`load_boxes`; and their quantised optical
    flow, see :mod:`vt_models.data.modality`) into one ``.npz`` file, atomically.

    Flow ``(T-1, H, W, 2)`` uint8 is stored as grey JPEGs with x above y (``(2H, W)``), MMAction2-style.
    """
    jpeg, offsets = _pack_jpeg(list(frames), quality)
    extra: dict[str, np.ndarray] = {f"box_{k}": v for k, v in boxes.items()} if boxes is not None else {}
    if flow is not None:
        stacked = [np.concatenate([f[..., 0], f[..., 1]], axis=0) for f in flow]
        extra["flow_jpeg"], extra["flow_offsets"] = _pack_jpeg(stacked, max(quality, 95))
    out = io.BytesIO()
    np.savez(
        out,
        jpeg=jpeg,
        offsets=offsets,
        frame_indices=np.asarray(frame_indices, np.int64),
        src_size=np.asarray(src_size, np.int64),
        **extra,
    )
    return atomic_write_bytes(path, out.getvalue())


def load_frames(path: Path | str, select: list[int] | np.ndarray | None = None) -> StoredFrames:
    """Read a frames file; ``select`` decodes only those stored positions (saves time for clips)."""
    with np.load(path, allow_pickle=False) as data:
        jpeg, offsets = data["jpeg"], data["offsets"]
        indices = data["frame_indices"]
        src = tuple(int(x) for x in data["src_size"])
    positions = list(range(len(offsets) - 1)) if select is None else [int(i) for i in select]
    return StoredFrames(_unpack_jpeg(jpeg, offsets, positions, "RGB"), indices[positions], src)


def load_flow(path: Path | str, select: list[int] | np.ndarray) -> np.ndarray:
    """Stored quantised flow at ``select`` (pair positions): ``(T, H, W, 2)`` uint8; a clear error without flow."""
    with np.load(path, allow_pickle=False) as data:
        if "flow_jpeg" not in data:
            raise ValueError(
                f"{path} has no optical flow: it was extracted with extract.flow: false; set "
                f"extract.flow: true and re-run `vt extract` (or `dvc repro`)"
            )
        jpeg, offsets = data["flow_jpeg"], data["flow_offsets"]
    last = len(offsets) - 2
    stacked = _unpack_jpeg(jpeg, offsets, [min(int(i), last) for i in select], "L")
    h = stacked.shape[1] // 2
    return np.stack([stacked[:, :h], stacked[:, h:]], axis=-1)


class StoredVideo:
    """A frames file as a :class:`~vt_models.data.modality.FrameSource`: frames and flow are read, not computed."""

    def __init__(self, path: Path | str, num_stored: int) -> None:
        self.path = Path(path)
        self.num_stored = num_stored

    def frames(self, positions: np.ndarray) -> np.ndarray:
        return load_frames(self.path, select=positions).frames

    def flow(self, positions: np.ndarray) -> np.ndarray:
        return load_flow(self.path, positions)


@dataclass(frozen=True)
class StoredBoxes:
    """Boxes of a frames file, aligned with its stored frames (resized-frame pixels, xyxy)."""

    pos: np.ndarray  # (N,) stored frame position
    xyxy: np.ndarray  # (N, 4) float32
    track: np.ndarray  # (N,) int64 track id
    label: np.ndarray  # (N,) str

    def at(self, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xyxy, label, track) of one stored frame."""
        keep = self.pos == position
        return self.xyxy[keep], self.label[keep], self.track[keep]


def load_boxes(path: Path | str) -> StoredBoxes:
    """The boxes stored with the frames (detection data); a clear error for a classification store."""
    with np.load(path, allow_pickle=False) as data:
        if "box_pos" not in data:
            raise ValueError(
                f"{path} has no boxes: it was extracted without annotations "
                "(run the detection stages: vt detect extract)"
            )
        return StoredBoxes(data["box_pos"], data["box_xyxy"], data["box_track"], data["box_label"])
