"""Extract sampled, resized frames for every video in a manifest, incrementally.

Outputs live in one folder: ``<md5>.npz`` per video (named by content, so a renamed file costs
nothing), ``index.json`` (what is stored, with labels and groups from the manifest) and
``failed.csv`` (videos that passed the probe but could not be extracted, with the reason).
A re-run only extracts videos whose content hash is new and deletes outputs of removed videos;
changing the extract params re-extracts everything. Extracts of one folder take turns (a lock file
beside it, ``.<folder>.lock``): overlapping scheduled runs would delete each other's files in flight.
"""

from __future__ import annotations

import errno
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vt_models.config import ExtractConfig
from vt_models.data.annotations import read_annotations, to_arrays
from vt_models.data.frames import decode_sampled, save_frames
from vt_models.data.modality import compute_flow
from vt_models.io.files import exclusive_lock, read_csv, write_csv, write_json
from vt_models.parallel import Failure, run_isolated
from vt_models.video.decode import preload_decoders

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FAILED_NAME = "failed.csv"
INDEX_VERSION = 2  # 2: optional optical flow in each frames file
STORED_KEYS = ("file", "frame_indices", "height", "width", "src_height", "src_width", "num_boxes")


class ExtractError(RuntimeError):
    """Extraction cannot start or cannot go on (missing manifest or raw folder, a full disk); names the fix."""


class MissingFramesError(ExtractError, FileNotFoundError):
    """A step reads extracted frames that are not there yet; a ``FileNotFoundError`` too, so that every command
    that reports a missing input cleanly reports this one."""


NO_SPACE = "no space to write"  # how a worker's failure to store frames starts: the disk, not the video
# a full disk, a full quota, a file larger than the process may write (RLIMIT_FSIZE)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass
class ExtractSummary:
    out_dir: Path
    extracted: int
    unchanged: int
    removed: int
    failed: int
    frames: int

    def __str__(self) -> str:
        return (
            f"extract: {self.extracted} extracted, {self.unchanged} unchanged, {self.removed} removed, "
            f"{self.failed} failed -> {self.out_dir / INDEX_NAME}"
        )


@dataclass(frozen=True)
class _Job:
    src: Path
    dst: Path
    backend: str
    cfg: ExtractConfig
    annotations: Path | None = None  # detection: the video's box sidecar, kept aligned with the frames


def fingerprint(cfg: ExtractConfig) -> dict[str, Any]:
    """The params that change what is stored (not how fast it is made)."""
    return cfg.model_dump(mode="json", exclude={"workers", "timeout_s"})


def extract_video(job: _Job) -> dict[str, Any]:
    """Decode, sample, resize and store one video. Runs in a worker with its own reader."""
    sampled = decode_sampled(job.src, job.cfg, backend=job.backend)
    frames, indices, src_size = sampled.frames, sampled.indices, sampled.src_size
    boxes = None
    if job.annotations is not None:
        boxes = align_boxes(read_annotations(job.annotations), indices, src_size, frames.shape[1:3])
    flow = compute_flow(frames) if job.cfg.flow else None
    try:  # atomic: a write that fails leaves no file behind, so the video is never taken as done
        save_frames(job.dst, frames, indices, src_size, job.cfg.jpeg_quality, boxes, flow)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise ExtractError(f"{NO_SPACE} {job.dst}: {exc.strerror}") from None
        raise
    out = {
        "frame_indices": indices.tolist(),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "src_height": int(src_size[0]),
        "src_width": int(src_size[1]),
    }
    if boxes is not None:
        out["num_boxes"] = int(len(boxes["pos"]))
    return out


def align_boxes(
    boxes: list, indices: np.ndarray, src_size: tuple[int, int], size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The boxes of each stored frame, in the resized frame's pixels: ``pos`` is the stored position.

    A source frame sampled twice (short videos repeat frames) gets its boxes twice.
    """
    arrays = to_arrays(boxes, src_size[1], src_size[0])
    sy, sx = size[0] / src_size[0], size[1] / src_size[1]
    by_frame: dict[int, list[int]] = {}
    for i, f in enumerate(arrays["frame"]):
        by_frame.setdefault(int(f), []).append(i)
    rows = [(pos, i) for pos, f in enumerate(indices) for i in by_frame.get(int(f), [])]
    pick = np.array([i for _, i in rows], np.int64)
    xyxy = arrays["xyxy"][pick] * np.array([sx, sy, sx, sy]) if len(pick) else np.zeros((0, 4))
    return {
        "pos": np.array([p for p, _ in rows], np.int64),
        "xyxy": xyxy.astype(np.float32),
        "track": arrays["track"][pick] if len(pick) else np.zeros(0, np.int64),
        "label": arrays["label"][pick] if len(pick) else np.zeros(0, np.str_),
    }


def row_key(row: dict[str, str]) -> str:
    """What names a video's stored frames: its content hash (plus its annotations' hash, for detection)."""
    return f"{row['md5']}-{row['ann_md5'][:12]}" if row.get("ann_md5") else row["md5"]


def load_index(out_dir: Path) -> dict[str, Any]:
    path = out_dir / INDEX_NAME
    if not path.is_file():
        raise MissingFramesError(
            f"{path} not found: run `vt extract` (`vt detect extract` for detection data) or `dvc repro` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def extract_dataset(
    manifest_csv: Path | str,
    raw_dir: Path | str,
    out_dir: Path | str,
    cfg: ExtractConfig = ExtractConfig(),
    progress: bool = True,
    mapper: Any = None,
) -> ExtractSummary:
    """Extract frames of new or changed videos (see the module docstring); ``mapper`` as in probe.

    A manifest with an ``annotations`` column (the detection probe's) also stores each video's
    boxes, aligned with the sampled, resized frames, next to the pixels.
    """
    manifest_csv, raw_dir, out_dir = Path(manifest_csv), Path(raw_dir), Path(out_dir)
    if not manifest_csv.is_file():
        raise ExtractError(f"manifest {manifest_csv} not found: run `vt probe` first")
    if not raw_dir.is_dir():
        raise ExtractError(f"raw video folder {raw_dir} not found (the manifest's paths are relative to it)")
    rows = read_csv(manifest_csv)
    # One extract of a folder at a time: each one deletes the temporary files and the frames that it does
    # not list, which would be those in flight of another (overlapping scheduled runs, a run beside the CLI).
    # The lock sits beside the folder, so the folder DVC hashes holds only frames.
    lock = out_dir.parent / f".{out_dir.name}.lock"
    with exclusive_lock(lock, holder=f"another extract into {out_dir}"):
        return _extract_locked(rows, raw_dir, out_dir, cfg, progress, mapper)


def _extract_locked(
    rows: list[dict[str, str]], raw_dir: Path, out_dir: Path, cfg: ExtractConfig, progress: bool, mapper: Any
) -> ExtractSummary:
    """:func:`extract_dataset`'s work, under the folder's lock."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for tmp in out_dir.glob(".*.tmp"):  # half a file from a killed run (atomic writes go through these)
        tmp.unlink()

    fp = fingerprint(cfg)
    previous: dict[str, dict[str, Any]] = {}
    if (out_dir / INDEX_NAME).is_file():
        old = load_index(out_dir)
        if old.get("version") == INDEX_VERSION and old.get("fingerprint") == fp:
            previous = {v.get("key", v["md5"]): v for v in old["videos"]}
        else:
            log.info("extract params changed since the last run: re-extracting everything")

    stored: dict[str, dict[str, Any]] = {}  # md5 -> frame info; identical files share one output
    todo: dict[str, _Job] = {}
    # absolute: the jobs may run elsewhere (a Dask worker started in another folder of a shared file system)
    src_dir, dst_dir = raw_dir.absolute(), out_dir.absolute()
    for row in rows:
        md5 = row_key(row)
        old = previous.get(md5)
        if old is not None and (out_dir / old["file"]).is_file():
            stored[md5] = {k: old[k] for k in STORED_KEYS if k in old}
        elif md5 not in todo:
            ann = src_dir / row["annotations"] if row.get("annotations") else None
            todo[md5] = _Job(src_dir / row["path"], dst_dir / f"{md5}.npz", row.get("backend") or "auto", cfg, ann)
    unchanged = len(stored)

    failed: dict[str, str] = {}
    no_space: list[str] = []  # not the videos' fault: they stay out of failed.csv and are extracted next run
    preload_decoders(flow=cfg.flow)
    if mapper is None:
        results = run_isolated(
            extract_video,
            list(todo.values()),
            workers=cfg.workers,
            timeout_s=cfg.timeout_s,
            desc=f"extract -> {out_dir}",
            progress=progress,
        )
    else:
        results = mapper(extract_video, list(todo.values()))
    for job, result in results:
        md5 = job.dst.stem
        if isinstance(result, Failure) and result.reason.startswith(NO_SPACE):
            no_space.append(result.reason)
        elif isinstance(result, Failure):
            failed[md5] = result.reason
            job.dst.unlink(missing_ok=True)
            log.warning("extract failed for %s: %s", job.src, result.reason)
        else:
            stored[md5] = {"file": job.dst.name, **result}

    videos = []
    failed_rows = []
    for row in sorted(rows, key=lambda r: r["path"]):
        md5 = row_key(row)
        if md5 in failed:
            failed_rows.append({"path": row["path"], "reason": failed[md5]})
            continue
        if md5 not in stored:  # not written for want of space
            continue
        videos.append(
            {
                "path": row["path"],
                "label": row["label"],
                "group": row["group"],
                "md5": row["md5"],
                "key": md5,
                "fps": float(row["fps"]),
                "src_num_frames": int(row["num_frames"]),
                **stored[md5],
                **({"box_labels": row["box_labels"].split(";")} if row.get("box_labels") else {}),
            }
        )

    keep = {v["file"] for v in videos}
    removed = 0
    for f in out_dir.glob("*.npz"):
        if f.name not in keep:
            f.unlink()
            removed += 1
    try:
        write_json(out_dir / INDEX_NAME, {"version": INDEX_VERSION, "fingerprint": fp, "videos": videos})
        write_csv(out_dir / FAILED_NAME, failed_rows, ["path", "reason"])
    except OSError as exc:
        if not no_space or exc.errno not in STORAGE_ERRNOS:
            raise
        # the index keeps its last state, which lists only files that were complete then
    if no_space:
        raise ExtractError(
            f"{no_space[0]} ({len(no_space)} video(s) not extracted for want of space): free space on the file "
            f"system of {out_dir} (`df -h {out_dir}`), then run `vt extract` again: it extracts only the videos "
            f"missing from {out_dir / INDEX_NAME}"
        )
    return ExtractSummary(
        out_dir=out_dir,
        extracted=len(todo) - len(failed),
        unchanged=unchanged,
        removed=removed,
        failed=len(failed_rows),
        frames=sum(len(v["frame_indices"]) for v in videos),
    )
