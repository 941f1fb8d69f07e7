"""Decode videos: decord first (fast random access), PyAV as the fallback.

A reader is opened per video and per process and never shared across processes: decord and
FFmpeg contexts are not fork-safe. Callers in worker pools open readers inside the worker.

Frames come out as a player shows them: a phone's portrait video is stored landscape with a display
rotation in its container, and a motion to the left would otherwise be read as one downwards. PyAV
reports that rotation and the frames are turned by it; decord does not apply it (it fails on such
files), so those go to PyAV.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")


class DecodeError(RuntimeError):
    """A file that cannot be decoded; the message says why."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int
    codec: str
    backend: str

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class VideoReader(Protocol):
    info: VideoInfo

    def read(self, indices: list[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` as (N, H, W, 3) uint8 RGB, in the order asked."""
        ...


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def preload_decoders(flow: bool = False) -> None:
    """Import the decoding libraries (and OpenCV for ``flow``) in this process, before it forks per-file
    workers (:mod:`vt_models.parallel`): each forked worker then shares them instead of importing them
    again. On small videos the imports were most of the work: probing 360 sample videos took 32 s
    without this and 11 s with it, on 2 cores."""
    import av  # noqa: F401

    decord_available()
    if flow:
        import cv2  # noqa: F401


def quarter_turns(rotation: float, path: Path) -> int:
    """Counter-clockwise quarter turns (0-3) of a display rotation in degrees (PyAV's ``VideoFrame.rotation``);
    an angle that is not a multiple of 90 is not applied (the log says so)."""
    turns = round(rotation / 90)
    if abs(rotation - 90 * turns) > 1:
        log.warning(
            "%s: display rotation %.1f degrees is not a multiple of 90; frames are used as stored", path, rotation
        )
        return 0
    return turns % 4


def _pyav_codec_and_turns(path: Path) -> tuple[str, int]:
    """The codec name and the display rotation (quarter turns) of the first video frame, ("", 0) if unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "", 0
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            # VideoFrame.rotation: PyAV 13 and later; older ones cannot see the rotation
            rotation = getattr(first, "rotation", 0) if first is not None else 0
            return stream.codec_context.name, quarter_turns(rotation, path)
    except Exception:  # noqa: BLE001 - informational here; the reader reports real decoding errors
        return "", 0


class DecordReader:
    def __init__(self, path: Path | str) -> None:
        import decord

        self.path = Path(path)
        # before decord opens the file: on a rotated video it builds frames of the wrong size (4 channels, a
        # size-mismatch error in get_batch), and a long-lived process (serving) should not hold that state
        codec, turns = _pyav_codec_and_turns(self.path)
        if turns:
            raise DecodeError(
                f"{self.path.name} has a display rotation of {90 * turns} degrees, which decord does not apply; "
                "PyAV does (backend pyav)"
            )
        try:
            # num_threads=1: parallelism comes from one process per video, not decoder threads.
            self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
        except Exception as exc:  # decord raises its own DECORDError and RuntimeError subclasses
            raise DecodeError(f"decord cannot open {self.path.name}: {_short(exc)}") from exc
        n = len(self._vr)
        if n <= 0:
            raise DecodeError(f"decord found no frames in {self.path.name}")
        height, width = self._vr[0].shape[:2]
        self.info = VideoInfo(
            num_frames=n,
            fps=float(self._vr.get_avg_fps() or 0.0),
            width=int(width),
            height=int(height),
            codec=codec,
            backend="decord",
        )

    def read(self, indices: list[int] | np.ndarray) -> np.ndarray:
        idx = [int(i) for i in indices]
        try:
            return self._vr.get_batch(idx).asnumpy()
        except Exception as exc:
            raise DecodeError(f"decord failed to decode frames of {self.path.name}: {_short(exc)}") from exc


class PyAVReader:
    """Sequential decoder: counts frames by decoding, so it never trusts container headers."""

    def __init__(self, path: Path | str) -> None:
        import av

        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except Exception as exc:
            raise DecodeError(f"not a readable video container: {_short(exc)}") from exc
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            self._container.close()
            raise DecodeError(f"no video stream (streams found: {', '.join(kinds)})")
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self._count: int | None = None
        self._turns = 0  # display rotation, read from the first frame while counting
        num_frames = self._count_frames()
        width, height = stream.codec_context.width, stream.codec_context.height
        self.info = VideoInfo(
            num_frames=num_frames,
            fps=float(rate) if rate else 0.0,
            width=height if self._turns % 2 else width,
            height=width if self._turns % 2 else height,
            codec=stream.codec_context.name,
            backend="pyav",
        )

    def _frames(self):
        self._container.seek(0)
        stream = self._container.streams.video[0]
        yield from self._container.decode(stream)

    def _count_frames(self) -> int:
        n = 0
        try:
            for frame in self._frames():
                if n == 0:
                    self._turns = quarter_turns(getattr(frame, "rotation", 0), self.path)
                n += 1
        except Exception as exc:
            if n == 0:
                raise DecodeError(f"undecodable video stream: {_short(exc)}") from exc
            log.debug("%s: decoding stopped after %d frames: %s", self.path, n, exc)
        if n == 0:
            raise DecodeError("video stream has no decodable frames")
        return n

    def read(self, indices: list[int] | np.ndarray) -> np.ndarray:
        idx = [int(i) for i in indices]
        if not idx:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8)
        if max(idx) >= self.info.num_frames or min(idx) < 0:
            raise DecodeError(f"frame index out of range 0..{self.info.num_frames - 1}: {idx}")
        wanted = set(idx)
        last = max(idx)
        found: dict[int, np.ndarray] = {}
        for i, frame in enumerate(self._frames()):
            if i in wanted:
                found[i] = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), self._turns))
            if i >= last:
                break
        return np.stack([found[i] for i in idx])

    def close(self) -> None:
        self._container.close()

    def __del__(self) -> None:
        # Close the container explicitly instead of leaving it to its own deallocation: with PyAV 18.1, two
        # unclosed readers of a video with a display rotation left the process so that decoding workers forked
        # from it later crashed (SIGSEGV); closed, they did not.
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()


def open_video(path: Path | str, backend: str = "auto") -> VideoReader:
    """Open ``path`` with ``backend`` ('decord', 'pyav' or 'auto': decord, then PyAV)."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {backend!r}; choices: auto, {', '.join(BACKENDS)}")
    if not Path(path).is_file():
        # both decoders would say "No such file or directory" without the name
        raise FileNotFoundError(f"{path}: no such video file")
    if backend == "pyav":
        return PyAVReader(path)
    if backend == "decord":
        return DecordReader(path)
    if decord_available():
        try:
            return DecordReader(path)
        except DecodeError as exc:
            log.debug("%s", exc)
    return PyAVReader(path)


def _short(exc: BaseException, limit: int = 200) -> str:
    # FFmpeg errors carry errno and the path; the reader already knows the path.
    text = getattr(exc, "strerror", None) or str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
