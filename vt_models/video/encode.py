"""Write frames to real encoded video files with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path | str,
    frames: np.ndarray,
    fps: float,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    container_options: dict[str, str] | None = None,
    display_rotation: int = 0,
) -> Path:
    """Encode ``frames`` (T, H, W, 3 uint8 RGB) to ``path``.

    ``pts``/``time_base`` allow variable frame rate files (each frame at its own time);
    ``container_options`` go to the muxer (e.g. ``{"movflags": "+faststart"}``). ``display_rotation``
    (degrees counter-clockwise) is stored in the container for players to apply, as phones record portrait
    video.
    libx264 with yuv420p needs even width and height; pass another codec for odd sizes.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if codec == "libx264" and pix_fmt == "yuv420p" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"libx264/yuv420p needs even width and height, got {frames.shape[2]}x{frames.shape[1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    if codec == "libx264":
        # Single-threaded, and mbtree off: x264's macroblock-tree rate control made identical
        # frames encode to different bytes from run to run; without it the output is repeatable.
        options = {"crf": "23", "preset": "veryfast", "threads": "1", "mbtree": "0", **(options or {})}
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        if options:
            stream.options = options
        if time_base is not None:
            stream.codec_context.time_base = time_base
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
