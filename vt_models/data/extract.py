"""Extract sampled, resized frames for every video in a manifest, incrementally.

Outputs live in one folder: ``<md5>.npz`` per video (named by content, so a renamed file costs
nothing), ``index.json`` (what is stored, with labels and groups from the manifest) and
``failed.csv`` (videos that passed the probe but could not be extracted, with the reason).
A re-run only extracts videos whose content hash is new and deletes outputs of removed videos;
changing the extract params re-extracts everything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vt_models.config import ExtractConfig
from vt_models.data.frames import resize_short_side, sample_indices, save_frames
from vt_models.fsutil import read_csv, write_csv, write_json
from vt_models.parallel import Failure, run_isolated
from vt_models.video.decode import open_video

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FAILED_NAME = "failed.csv"
INDEX_VERSION = 1


class ExtractError(RuntimeError):
    """Extraction cannot start (missing manifest or raw folder); names the fix."""


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


def fingerprint(cfg: ExtractConfig) -> dict[str, Any]:
    """The params that change what is stored (not how fast it is made)."""
    return cfg.model_dump(mode="json", exclude={"workers", "timeout_s"})


def extract_video(job: _Job) -> dict[str, Any]:
    """Decode, sample, resize and store one video. Runs in a worker with its own reader."""
    reader = open_video(job.src, backend=job.backend)
    indices = sample_indices(reader.info.num_frames, reader.info.fps, job.cfg)
    frames = reader.read(indices)
    src_size = frames.shape[1:3]
    frames = resize_short_side(frames, job.cfg.short_side)
    save_frames(job.dst, frames, indices, src_size, job.cfg.jpeg_quality)
    return {
        "frame_indices": indices.tolist(),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "src_height": int(src_size[0]),
        "src_width": int(src_size[1]),
    }


def load_index(out_dir: Path) -> dict[str, Any]:
    path = out_dir / INDEX_NAME
    if not path.is_file():
        raise ExtractError(f"{path} not found: run `vt extract` (or `dvc repro`) first")
    return json.loads(path.read_text(encoding="utf-8"))


def extract_dataset(
    manifest_csv: Path | str,
    raw_dir: Path | str,
    out_dir: Path | str,
    cfg: ExtractConfig = ExtractConfig(),
    progress: bool = True,
    mapper: Any = None,
) -> ExtractSummary:
    """Extract frames of new or changed videos (see the module docstring); ``mapper`` as in probe."""
    manifest_csv, raw_dir, out_dir = Path(manifest_csv), Path(raw_dir), Path(out_dir)
    if not manifest_csv.is_file():
        raise ExtractError(f"manifest {manifest_csv} not found: run `vt probe` first")
    if not raw_dir.is_dir():
        raise ExtractError(f"raw video folder {raw_dir} not found (the manifest's paths are relative to it)")
    rows = read_csv(manifest_csv)
    out_dir.mkdir(parents=True, exist_ok=True)

    fp = fingerprint(cfg)
    previous: dict[str, dict[str, Any]] = {}
    if (out_dir / INDEX_NAME).is_file():
        old = load_index(out_dir)
        if old.get("version") == INDEX_VERSION and old.get("fingerprint") == fp:
            previous = {v["md5"]: v for v in old["videos"]}
        else:
            log.info("extract params changed since the last run: re-extracting everything")

    stored: dict[str, dict[str, Any]] = {}  # md5 -> frame info; identical files share one output
    todo: dict[str, _Job] = {}
    for row in rows:
        md5 = row["md5"]
        old = previous.get(md5)
        if old is not None and (out_dir / old["file"]).is_file():
            stored[md5] = {k: old[k] for k in ("file", "frame_indices", "height", "width", "src_height", "src_width")}
        elif md5 not in todo:
            todo[md5] = _Job(raw_dir / row["path"], out_dir / f"{md5}.npz", row.get("backend") or "auto", cfg)
    unchanged = len(stored)

    failed: dict[str, str] = {}
    if mapper is None:
        results = run_isolated(extract_video, list(todo.values()), workers=cfg.workers, timeout_s=cfg.timeout_s,
                               desc=f"extract -> {out_dir}", progress=progress)
    else:
        results = mapper(extract_video, list(todo.values()))
    for job, result in results:
        md5 = job.dst.stem
        if isinstance(result, Failure):
            failed[md5] = result.reason
            job.dst.unlink(missing_ok=True)
            log.warning("extract failed for %s: %s", job.src, result.reason)
        else:
            stored[md5] = {"file": job.dst.name, **result}

    videos = []
    failed_rows = []
    for row in sorted(rows, key=lambda r: r["path"]):
        md5 = row["md5"]
        if md5 in failed:
            failed_rows.append({"path": row["path"], "reason": failed[md5]})
            continue
        videos.append({
            "path": row["path"], "label": row["label"], "group": row["group"], "md5": md5,
            "fps": float(row["fps"]), "src_num_frames": int(row["num_frames"]), **stored[md5],
        })

    keep = {v["file"] for v in videos}
    removed = 0
    for f in out_dir.glob("*.npz"):
        if f.name not in keep:
            f.unlink()
            removed += 1
    write_json(out_dir / INDEX_NAME, {"version": INDEX_VERSION, "fingerprint": fp, "videos": videos})
    write_csv(out_dir / FAILED_NAME, failed_rows, ["path", "reason"])
    return ExtractSummary(
        out_dir=out_dir, extracted=len(todo) - len(failed), unchanged=unchanged, removed=removed,
        failed=len(failed_rows), frames=sum(len(v["frame_indices"]) for v in videos),
    )
