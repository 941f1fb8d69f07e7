"""Small file helpers: content hashes, atomic writes, CSV tables, a lock between processes."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)


def file_md5(path: Path | str, chunk: int = 1 << 20) -> str:
    """MD5 of the file's bytes (the same digest DVC uses for files)."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: Path | str, holder: str = "another process") -> Iterator[None]:
    """Hold an exclusive lock on file ``path`` (made if missing) for the block: the blocks of processes on this
    machine that lock the same file run one at a time. A process that has to wait says so. The lock goes with
    the process (an advisory ``flock``), so a killed holder never leaves it stuck. Without ``fcntl`` (not
    POSIX) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:  # released when the file closes
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s to finish (it holds %s)", holder, path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> Path:
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename it into place, so
    readers never see half a file. The temporary name is unique, so two writers of one path never delete
    each other's file in flight (the last rename wins); a failed write leaves the old file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_csv(path: Path | str, rows: Iterable[Mapping[str, Any]], columns: list[str]) -> Path:
    """Write rows with a fixed header (written even when there are no rows)."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
