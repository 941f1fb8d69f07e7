"""What the served model may read: a video posted in the request (``video_b64``), or a file under the
folder the operator names (``VT_SERVE_ROOT``), never any other file of the server.

A path outside that root is refused before the file system is asked anything about it, with one
message whatever the path, so a client learns nothing about which files exist. With no root set, the
served model reads no file of its own at all. Posted videos are size-checked before decoding, must
start like a container we read (MP4/MOV, Matroska/WebM, AVI), must decode, and live only in a private
temporary folder for the time of their prediction. `vt predict` (the user's own files) does not go
through here.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT_ENV = "VT_SERVE_ROOT"
MAX_MB_ENV = "VT_SERVE_MAX_MB"
DEFAULT_MAX_MB = 20.0

NO_ROOT = (
    f"path input is off: this server reads no files of its own; post the video itself as video_b64 "
    f"(or the operator sets {ROOT_ENV} to a folder of videos)"
)
# one message for every path outside the root, existing or not: no existence oracle
OUTSIDE_ROOT = (
    f"path refused: only files under the served folder ({ROOT_ENV}) are read; "
    "post the video itself as video_b64, or give a path under that folder"
)


class InputRefused(ValueError):
    """A request row the served model will not read; the message says what to send instead."""


@dataclass(frozen=True)
class ServePolicy:
    """Where served paths may point (None: nowhere) and how large a posted video may be."""

    root: Path | None
    max_bytes: int

    @classmethod
    def from_config(cls, model_config: dict[str, Any] | None = None) -> ServePolicy:
        """From the loader's ``model_config`` (``serve_root``, ``max_mb``), else ``VT_SERVE_ROOT`` and
        ``VT_SERVE_MAX_MB``. Never from request params: a client must not widen what it may read."""
        conf = model_config or {}
        root = conf.get("serve_root") or os.environ.get(ROOT_ENV) or None
        raw = conf.get("max_mb") or os.environ.get(MAX_MB_ENV) or DEFAULT_MAX_MB
        try:
            max_mb = float(raw)
        except ValueError:
            raise ValueError(f"{MAX_MB_ENV}={raw!r} is not a number of megabytes (e.g. {DEFAULT_MAX_MB:g})") from None
        if not max_mb > 0:
            raise ValueError(f"{MAX_MB_ENV}={raw!r} must be above 0")
        return cls(Path(os.path.realpath(root)) if root else None, int(max_mb * 1024 * 1024))

    def path(self, given: str) -> Path:
        """The file ``given`` names, when it is under the root (relative paths: from the root)."""
        if self.root is None:
            raise InputRefused(NO_ROOT)
        # first lexically (no file system access for anything outside), then with symlinks resolved
        lexical = Path(os.path.normpath(self.root / given))
        if not lexical.is_relative_to(self.root):
            raise InputRefused(OUTSIDE_ROOT)
        real = Path(os.path.realpath(lexical))
        if not real.is_relative_to(self.root):
            raise InputRefused(OUTSIDE_ROOT)
        if not real.is_file():
            raise InputRefused(f"no such video under the served folder: {given}")
        return real


# First bytes of the containers we read -> the file suffix the decoders expect.
_SIGNATURES: list[tuple[int, bytes, str]] = [
    (4, b"ftyp", ".mp4"),  # ISO base media: MP4, MOV, M4V
    (0, b"\x1a\x45\xdf\xa3", ".mkv"),  # EBML: Matroska, WebM
    (8, b"AVI ", ".avi"),  # RIFF....AVI
]


def container_suffix(head: bytes) -> str | None:
    """The suffix of the container ``head`` (a file's first bytes) starts like, or None."""
    for offset, magic, suffix in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic and (suffix != ".avi" or head[:4] == b"RIFF"):
            return suffix
    return None


@contextmanager
def posted_video(b64: str, max_bytes: int) -> Iterator[Path]:
    """The posted video as a private temporary file (removed afterwards), once it passed the checks."""
    from vt_models.video.decode import DecodeError, open_video

    limit = f"{max_bytes / 1024 / 1024:.3g} MB ({MAX_MB_ENV})"
    # base64 is 4 characters per 3 bytes: refuse an oversized payload before decoding it
    if len(b64) > (max_bytes + 2) // 3 * 4 + 4:
        raise InputRefused(f"video_b64 is over the limit of {limit}; send a shorter or smaller video")
    try:
        data = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InputRefused("video_b64 is not valid base64 (standard alphabet, with padding)") from None
    if not data:
        raise InputRefused("video_b64 is empty")
    if len(data) > max_bytes:
        raise InputRefused(f"video_b64 is over the limit of {limit}; send a shorter or smaller video")
    suffix = container_suffix(data[:16])
    if suffix is None:
        raise InputRefused("video_b64 is not a video we read: send MP4/MOV, Matroska/WebM or AVI bytes")
    folder = tempfile.mkdtemp(prefix="vt-serve-")  # mode 0700: private to this server's user
    try:
        path = Path(folder) / f"video{suffix}"
        path.write_bytes(data)
        try:
            info = open_video(path).info
        except DecodeError as exc:
            # the decoder names the temporary file; the client only knows its own upload
            raise InputRefused(
                f"video_b64 is not a readable video: {str(exc).replace(str(path), 'video_b64')}"
            ) from None
        if info.num_frames < 1:
            raise InputRefused("video_b64 has no video frames")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def request_video(policy: ServePolicy, path: Any, b64: Any) -> Iterator[Path]:
    """One request row's video: either ``path`` (under the root) or ``video_b64`` (the bytes), not both."""
    given_path, given_b64 = _text(path), _text(b64)
    if bool(given_path) == bool(given_b64):
        raise InputRefused("give either path or video_b64 in each row (one of them, not both)")
    if given_b64:
        with posted_video(given_b64, policy.max_bytes) as video:
            yield video
    else:
        yield policy.path(given_path)


def _text(value: Any) -> str:
    """A request cell as text; missing cells (None, NaN) are empty."""
    return value if isinstance(value, str) else ""
