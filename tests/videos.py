"""Tiny real video files, good and hostile, made on the fly for tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vt_models.video.encode import write_video


def moving_square(n_frames: int = 12, width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """A bright square moving right over noise: distinct frames, cheap to make."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (n_frames, height, width, 3), dtype=np.uint8)
    for t in range(n_frames):
        x = int(t * (width - 12) / max(1, n_frames - 1))
        frames[t, height // 3 : height // 3 + 12, x : x + 12] = (250, 200, 50)
    return frames


def good_mp4(
    path: Path, n_frames: int = 12, width: int = 64, height: int = 48, fps: int = 10, seed: int = 0, **kw
) -> Path:
    return write_video(path, moving_square(n_frames, width, height, seed), fps, **kw)


def audio_only(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def hostile_set(root: Path) -> dict[str, str]:
    """Write a zoo of files under ``root/cls``; return {relative path: 'manifest' | 'quarantine'}."""
    d = root / "cls"
    d.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def put(name: str, where: str) -> Path:
        expect[f"cls/{name}"] = where
        return d / name

    good_mp4(put("good.mp4", "manifest"))
    good_mp4(put("UPPER CASE.MP4", "manifest"))
    good_mp4(put("ünïcödé näme.mp4", "manifest"))
    good_mp4(put("odd dims.avi", "manifest"), width=63, height=47, codec="mjpeg", pix_fmt="yuvj420p")
    good_mp4(put("vp9.webm", "manifest"), codec="libvpx-vp9")
    pts = [0, 1, 3, 4, 8, 9, 10, 15, 16, 20, 21, 25]
    write_video(put("vfr.mp4", "manifest"), moving_square(12), 10, pts=pts, time_base=Fraction(1, 10))
    put("zero.mp4", "quarantine").write_bytes(b"")
    put("text.mp4", "quarantine").write_text("this is not a video\n")
    put("random.mkv", "quarantine").write_bytes(np.random.default_rng(1).bytes(4096))
    audio_only(put("audio only.mp4", "quarantine"))
    good_mp4(put("one frame.mp4", "quarantine"), n_frames=1)
    full = good_mp4(d / "_full.tmp.mp4", n_frames=30)
    put("truncated.mp4", "quarantine").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    # moov first: the header still promises 40 frames but half the data is gone (a lying count).
    fast = good_mp4(d / "_fast.tmp.mp4", n_frames=40, container_options={"movflags": "+faststart"})
    put("truncated faststart.mp4", "manifest").write_bytes(fast.read_bytes()[: fast.stat().st_size * 3 // 5])
    full.unlink()
    fast.unlink()
    (d / "notes.txt").write_text("not a video extension: ignored\n")
    return expect
