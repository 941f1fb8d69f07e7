"""Input modalities: what a model sees of a clip, and the one place each is computed.

- ``rgb``: the frames themselves (3 channels).
- ``rgb_diff``: TSN's RGB difference, frame ``p+1`` minus frame ``p`` (3 channels): appearance
  that does not move cancels out.
- ``flow``: dense optical flow from frame ``p`` to frame ``p+1`` (2 channels, x and y), computed
  by OpenCV's Farneback method (CPU) and stored quantised as 8-bit images, as MMAction2 stores flow:
  values are clipped to ``[-bound, bound]`` pixels and mapped linearly to 0..255 (128 is no motion).
  Farneback rather than DIS: on flat, low-texture backgrounds DIS reported about 1.4 px of motion
  where nothing moved (median over the sample videos), Farneback 0.0; on moving objects the sign of
  the motion was right for 96 % of clips with Farneback (window 9) against 79 % with DIS.

"Frame ``p+1``" is the next *stored* frame: motion inputs are defined on pairs of consecutive
sampled frames, so a video with ``n`` stored frames has ``n - 1`` motion positions. Extraction,
training, evaluation, the motion probes and serving all derive motion through :func:`compute_flow`
and :func:`clip_array`; there is no second code path.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)

Modality = Literal["rgb", "rgb_diff", "flow"]
CHANNELS: dict[str, int] = {"rgb": 3, "rgb_diff": 3, "flow": 2}
MODALITIES: tuple[str, ...] = tuple(CHANNELS)
FLOW_BOUND = 16.0  # pixels (of the stored frame) that map to the ends of the 8-bit range
NO_MOTION = 128  # the stored level of zero flow (127.5, the exact zero, rounds to it)

# How a raw clip (values in [0, 1] for rgb, [-1, 1] for the motion modalities) is normalised.
_RGB_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet, as the 2D weights expect


def check_modality(name: str) -> str:
    if name not in CHANNELS:
        raise ValueError(f"unknown modality {name!r}; choices: {', '.join(MODALITIES)}")
    return name


def is_motion(modality: str) -> bool:
    """Motion modalities read pairs of consecutive stored frames."""
    return check_modality(modality) != "rgb"


def positions_available(num_stored: int, modality: str) -> int:
    """How many clip positions a video with ``num_stored`` frames has for ``modality``."""
    return max(1, num_stored - 1) if is_motion(modality) else num_stored


def normalisation(
    modality: str,
    rgb_mean_std: tuple[tuple[float, ...], tuple[float, ...]] = _RGB_MEAN_STD,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) applied to the raw clip values of ``modality``.

    Motion inputs are centred at zero already; RGB differences are scaled like RGB (ImageNet std),
    flow (already divided by its bound) is scaled up so that typical motion has unit size.
    """
    if modality == "rgb":
        return rgb_mean_std
    if modality == "rgb_diff":
        return (0.0, 0.0, 0.0), tuple(rgb_mean_std[1])
    return (0.0, 0.0), (0.25, 0.25)


# --------------------------------------------------------------------------- optical flow


# Farneback parameters: 3-level pyramid (halving), 9 px window, 3 iterations, 5 px polynomial
# neighbourhood with sigma 1.1 (OpenCV's recommendation for poly_n 5).
_FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=9, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)


def compute_flow(frames: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Quantised flow between consecutive frames: ``(T, H, W, 3)`` uint8 -> ``(T-1, H, W, 2)`` uint8.

    Farneback optical flow (OpenCV) on grey frames; x and y displacements in pixels, clipped to
    ``[-bound, bound]`` and mapped to 0..255. A single frame gives one zero-flow image, and so does a
    pair of identical frames.
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got shape {frames.shape}")
    if len(frames) < 2:
        return np.full((1, *frames.shape[1:3], 2), NO_MOTION, np.uint8)
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    out = np.empty((len(frames) - 1, *frames.shape[1:3], 2), np.uint8)
    for i in range(len(frames) - 1):
        if np.array_equal(grey[i], grey[i + 1]):
            # A repeated frame (frame-rate conversion, a frozen camera, the static probe) has no motion;
            # Farneback returns up to ~0.1 px of noise there, which the quantiser turns into 1-2 levels.
            out[i] = NO_MOTION
            continue
        flow = cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, **_FARNEBACK)
        out[i] = quantise_flow(flow, bound)
    return out


def quantise_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    q = np.clip(flow, -bound, bound) * (127.5 / bound) + 127.5
    return np.round(q).astype(np.uint8)


def dequantise_flow(q: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """uint8 flow -> float32 in units of ``bound`` ([-1, 1])."""
    return (q.astype(np.float32) - 127.5) / 127.5


# --------------------------------------------------------------------------- clips


class FrameSource(Protocol):
    """A video's stored frames: decoded from a frames file, or frames held in memory."""

    num_stored: int

    def frames(self, positions: np.ndarray) -> np.ndarray: ...  # (T, H, W, 3) uint8

    def flow(self, positions: np.ndarray) -> np.ndarray: ...  # (T, H, W, 2) uint8, pair p -> p+1


class MemoryFrames:
    """Frames in memory (serving, motion probes): flow is computed on demand with :func:`compute_flow`."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames = np.asarray(frames)
        self.num_stored = len(self._frames)

    def frames(self, positions: np.ndarray) -> np.ndarray:
        return self._frames[np.asarray(positions, np.int64)]

    def flow(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, np.int64)
        nxt = np.minimum(pos + 1, self.num_stored - 1)
        # OpenCV's Farneback runs on one core and releases the GIL: the pairs go to a thread per core
        # (1.85x on 2 cores). Nothing else runs meanwhile: callers (the motion probes, serving) compute
        # a clip's flow before the model sees it.
        pairs = list(_flow_pool().map(compute_flow, [self._frames[[p, n]] for p, n in zip(pos, nxt, strict=True)]))
        return np.concatenate(pairs) if pairs else np.zeros((0, *self._frames.shape[1:3], 2), np.uint8)


@functools.cache
def _flow_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0))), thread_name_prefix="flow")


# A forked child (a data-loader worker) has the pool object but not its threads: it makes its own.
os.register_at_fork(after_in_child=_flow_pool.cache_clear)


def clip_array(source: FrameSource, positions: np.ndarray, modality: str) -> np.ndarray:
    """The raw clip ``(T, H, W, C)`` float32 of ``modality`` at ``positions`` (see the module doc)."""
    check_modality(modality)
    pos = np.asarray(positions, np.int64)
    if modality == "rgb":
        return source.frames(pos).astype(np.float32) / 255.0
    if modality == "flow":
        return dequantise_flow(source.flow(pos))
    nxt = np.minimum(pos + 1, source.num_stored - 1)
    both = source.frames(np.concatenate([pos, nxt])).astype(np.float32) / 255.0
    return both[len(pos) :] - both[: len(pos)]


def reverse_label_map(classes: Sequence[str], pairs: Sequence[Sequence[str]]) -> np.ndarray:
    """``out[i]``: the label of class ``i``'s videos played backwards. Pairs swap; other classes keep their label.

    Pairs naming a class this data set does not have are ignored (the defaults name the sample classes).
    """
    index = {c: i for i, c in enumerate(classes)}
    out = np.arange(len(classes), dtype=np.int64)
    seen: set[str] = set()
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"a reverse pair is two different classes, got {list(pair)}")
        if seen & set(pair):
            raise ValueError(f"class {sorted(seen & set(pair))[0]!r} is in more than one reverse pair")
        seen |= set(pair)
        a, b = pair
        if a in index and b in index:
            out[index[a]], out[index[b]] = index[b], index[a]
        elif a in index or b in index:
            log.warning(
                "reverse pair %s: only %r is a class here; it keeps its label under reversal",
                list(pair),
                a if a in index else b,
            )
    return out
