"""Probe a folder of videos: every video file ends in the manifest or in quarantine, never lost.

``manifest.csv`` has one row per usable video (label, group, frames, fps, size, content hash),
``quarantine.csv`` one row per unusable file with the reason. Nothing in the raw folder is
touched. Each file is probed in its own time-bounded process (see :mod:`vt_models.parallel`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vt_models.config import ProbeConfig
from vt_models.data.annotations import (
    SUFFIXES,
    AnnotationError,
    companion_files,
    read_annotations,
    sidecar,
    validate,
)
from vt_models.io.files import file_md5, read_csv, write_csv
from vt_models.parallel import Failure, run_isolated
from vt_models.video.decode import DecodeError, DecordReader, PyAVReader, decord_available, preload_decoders

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "path",
    "label",
    "group",
    "num_frames",
    "fps",
    "duration_s",
    "width",
    "height",
    "size_bytes",
    "md5",
    "codec",
    "backend",
]
QUARANTINE_COLUMNS = ["path", "reason"]
ANNOTATION_COLUMNS = ["annotations", "ann_md5", "num_boxes", "box_labels"]


class ProbeError(RuntimeError):
    """The probe cannot run at all (bad folder, bad labels CSV); names the file and the fix."""


@dataclass
class ProbeSummary:
    manifest: Path
    quarantine: Path
    usable: int
    quarantined: int
    by_label: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        total = self.usable + self.quarantined
        return (
            f"probe: {total} video file(s): {self.usable} usable -> {self.manifest}, "
            f"{self.quarantined} quarantined -> {self.quarantine}"
        )


def find_videos(raw_dir: Path, extensions: list[str]) -> list[Path]:
    """Video files under ``raw_dir`` (extension match is case-insensitive), relative, sorted."""
    exts = {e.lower() for e in extensions}
    return sorted(
        p.relative_to(raw_dir)
        for p in raw_dir.rglob("*")
        if p.suffix.lower() in exts
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(raw_dir).parts)
    )


def group_of(stem: str, pattern: re.Pattern[str]) -> str:
    """Recording id from a file stem (e.g. ``v_Drum_g08_c01`` -> ``v_Drum_g08``); the stem if no match."""
    match = pattern.match(stem)
    return match.group("group") if match and match.group("group") else stem


def read_labels_csv(csv_path: Path) -> dict[str, tuple[str, str | None]]:
    """``path,label[,group]`` rows -> {posix path: (label, group or None)}. Strict about conflicts."""
    if not csv_path.is_file():
        raise ProbeError(f"labels CSV {csv_path} not found: fix datasets.<name>.labels_csv in params.yaml")
    rows = read_csv(csv_path)
    if rows and not {"path", "label"} <= set(rows[0]):
        raise ProbeError(f"{csv_path}: header must contain 'path' and 'label' (optional 'group'), got {list(rows[0])}")
    labels: dict[str, tuple[str, str | None]] = {}
    for line, row in enumerate(rows, start=2):
        path = Path((row.get("path") or "").strip()).as_posix()
        label = (row.get("label") or "").strip()
        if not path or path == "." or not label:
            raise ProbeError(f"{csv_path} line {line}: empty path or label: {row}")
        group = (row.get("group") or "").strip() or None
        if path in labels and labels[path] != (label, group):
            raise ProbeError(f"{csv_path} line {line}: {path} listed again with a different label/group")
        labels[path] = (label, group)
    return labels


def inspect_video(path: Path, min_frames: int) -> dict[str, object]:
    """Open, spot-decode and measure one file. Raises with a human reason when it is unusable.

    Runs inside a worker process. decord is tried first; headers can lie (truncated files keep
    their frame count), so the first, middle and last frames are decoded before we trust it.
    PyAV then counts frames by decoding them all, which is the ground truth.
    """
    size = path.stat().st_size
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    info = None
    decord_error = ""
    if decord_available():
        try:
            reader = DecordReader(path)
            n = reader.info.num_frames
            frames = reader.read(sorted({0, n // 2, n - 1}))
            if frames.shape[0] and frames.shape[1:3] == (reader.info.height, reader.info.width):
                info = reader.info
        except DecodeError as exc:
            decord_error = str(exc)
    if info is None:
        try:
            info = PyAVReader(path).info
        except DecodeError as exc:
            # PyAV's reason is the readable one; decord's carries C++ source locations.
            log.debug("%s: decord said: %s", path, decord_error)
            raise DecodeError(str(exc)) from None
    if info.num_frames < min_frames:
        raise DecodeError(f"too short for a clip: {info.num_frames} frame(s), probe.min_frames is {min_frames}")
    if info.width <= 0 or info.height <= 0:
        raise DecodeError(f"invalid frame size {info.width}x{info.height}")
    return {
        "num_frames": info.num_frames,
        "fps": round(info.fps, 4),
        "duration_s": round(info.duration_s, 4),
        "width": info.width,
        "height": info.height,
        "size_bytes": size,
        "md5": file_md5(path),
        "codec": info.codec,
        "backend": info.backend,
    }


# how each probed column reads back from a manifest.csv (the rest stay strings)
_TYPES: dict[str, Callable[[str], Any]] = {
    "num_frames": int,
    "fps": float,
    "duration_s": float,
    "width": int,
    "height": int,
    "size_bytes": int,
}


def probed_before(manifest: Path, raw_dir: Path) -> dict[Path, dict[str, object]]:
    """The probe results in an earlier ``manifest.csv`` of ``raw_dir`` that still describe the files there.

    A row counts only when the file has the same size and MD5 now (the MD5 costs a read, not a decode), so a
    replaced or re-encoded video is probed again. Keyed by the absolute path, as the probe's jobs are.
    """
    known: dict[Path, dict[str, object]] = {}
    if not manifest.is_file():
        return known
    for row in read_csv(manifest):
        path = raw_dir.absolute() / row["path"]
        try:
            same = path.stat().st_size == int(row["size_bytes"]) and file_md5(path) == row["md5"]
        except (OSError, ValueError, KeyError):
            continue
        if same:
            known[path] = {k: _TYPES.get(k, str)(row[k]) for k in MANIFEST_COLUMNS[3:]}
    return known


def _check_annotations(
    video: Path, fmt: str, classes: list[str] | None, info: dict[str, Any], raw_dir: Path
) -> dict[str, Any]:
    """Find, read and validate a video's box sidecar; the manifest columns that describe it."""
    found = sidecar(video, fmt)
    if found is None:
        names = " or ".join(video.stem + s for f, s in SUFFIXES.items() if fmt in ("auto", f))
        raise AnnotationError(
            f"no box annotations: expected {names} next to the video (see vt_models.data.annotations)"
        )
    boxes = read_annotations(found)
    clipped = validate(boxes, int(info["num_frames"]), int(info["width"]), int(info["height"]), classes, found.name)
    if clipped:
        log.warning(
            "%s: %d of %d boxes reach past the %sx%s frame; they are clipped to it",
            found.relative_to(raw_dir),
            clipped,
            len(boxes),
            info["width"],
            info["height"],
        )
    return {
        "annotations": found.relative_to(raw_dir).as_posix(),
        # the labels file of a .gt.txt names its classes, so a change there re-extracts the video too
        "ann_md5": _annotation_md5(found),
        "num_boxes": len(boxes),
        "box_labels": ";".join(
            name for name, _ in Counter(b.label for b in boxes).most_common()
        ),  # most frequent first
    }


def _annotation_md5(found: Path) -> str:
    """MD5 of a sidecar; with a companion (a .gt.txt's labels file, which names its classes), of both files'
    MD5s, so that a change to either re-extracts the video."""
    digests = [file_md5(p) for p in [found, *companion_files(found)]]
    return digests[0] if len(digests) == 1 else hashlib.md5("".join(digests).encode()).hexdigest()


def _inspect_job(job: tuple[Path, int]) -> dict[str, object]:
    return inspect_video(*job)


Mapper = Callable[[Callable[[Any], Any], list[Any]], Iterable[tuple[Any, Any]]]


def probe_dataset(
    raw_dir: Path | str,
    out_dir: Path | str,
    cfg: ProbeConfig = ProbeConfig(),
    labels_csv: Path | str | None = None,
    progress: bool = True,
    mapper: Mapper | None = None,
    annotations: str | None = None,
    classes: list[str] | None = None,
    reuse: Path | None = None,
    labelled: bool = True,
) -> ProbeSummary:
    """Probe every video under ``raw_dir``; write ``manifest.csv`` and ``quarantine.csv`` in ``out_dir``.

    ``mapper(fn, jobs)`` yields ``(job, result or Failure)``; the default runs each job in its own
    time-bounded process. The Prefect flow passes one that maps cached tasks instead.
    ``annotations`` (``auto`` | ``mot`` | ``coco``, for detection) also requires each video's box
    sidecar and validates it against the video (:mod:`vt_models.data.annotations`); videos without
    usable boxes are quarantined with the reason. Boxes with labels outside ``classes`` are errors.
    Videos outside class folders are then fine: their label is their most frequent box label.
    ``labelled=False`` (``datasets.<name>.labelled``): videos anywhere under ``raw_dir``, label empty (no
    class folder is read as a label).
    ``reuse``: an earlier probe's ``manifest.csv`` of the same folder and ``probe`` settings (the detection
    probe passes the classifier probe's): its files that are unchanged (:func:`probed_before`) are not decoded
    again; their annotations are still checked.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise ProbeError(f"raw video folder {raw_dir} does not exist: create it or fix datasets.<name>.raw")
    files = find_videos(raw_dir, cfg.extensions)
    pattern = re.compile(cfg.group_regex)
    quarantine: list[dict[str, str]] = []
    labelled_as: dict[Path, tuple[str, str]] = {}

    csv_labels = read_labels_csv(Path(labels_csv)) if labels_csv else None
    for rel in files:
        key = rel.as_posix()
        if csv_labels is not None:
            if key not in csv_labels:
                quarantine.append(
                    {"path": key, "reason": f"not listed in labels CSV {labels_csv}: add a row '{key},<label>'"}
                )
                continue
            label, group = csv_labels[key]
            labelled_as[rel] = (label, group or group_of(rel.stem, pattern))
        elif not labelled:
            labelled_as[rel] = ("", group_of(rel.stem, pattern))
        elif len(rel.parts) < 2 and annotations:
            labelled_as[rel] = ("", group_of(rel.stem, pattern))  # filled from the boxes below
        elif len(rel.parts) < 2:
            quarantine.append(
                {"path": key, "reason": "not inside a class folder: move it to RAW_DIR/<class>/ or use a labels CSV"}
            )
        else:
            labelled_as[rel] = (rel.parts[0], group_of(rel.stem, pattern))
    if csv_labels is not None:
        present = {rel.as_posix() for rel in files}
        for key in sorted(set(csv_labels) - present):
            quarantine.append({"path": key, "reason": f"listed in labels CSV {labels_csv} but no such video file"})

    manifest: list[dict[str, object]] = []
    # absolute: the jobs may run elsewhere (a Dask worker started in another folder of a shared file system)
    jobs = {raw_dir.absolute() / rel: rel for rel in labelled_as}
    known = probed_before(Path(reuse), raw_dir) if reuse is not None else {}
    known = {p: r for p, r in known.items() if p in jobs and int(r["num_frames"]) >= cfg.min_frames}
    job_list = [(p, cfg.min_frames) for p in jobs if p not in known]
    if known:
        log.info(
            "probe %s: %d of %d videos unchanged since %s, not decoded again", raw_dir, len(known), len(jobs), reuse
        )
    preload_decoders()
    if not job_list:
        results: Iterable[tuple[Any, Any]] = []
    elif mapper is None:
        results = run_isolated(
            _inspect_job,
            job_list,
            workers=cfg.workers,
            timeout_s=cfg.timeout_s,
            desc=f"probe {raw_dir}",
            progress=progress,
        )
    else:
        results = mapper(_inspect_job, job_list)
    results = itertools.chain(results, (((p, cfg.min_frames), r) for p, r in known.items()))
    for (path, _), result in results:
        rel = jobs[path]
        if isinstance(result, Failure):
            quarantine.append({"path": rel.as_posix(), "reason": result.reason})
            log.warning("quarantined %s: %s", rel, result.reason)
            continue
        label, group = labelled_as[rel]
        row = {"path": rel.as_posix(), "label": label, "group": group, **result}
        if annotations:
            try:
                row.update(_check_annotations(raw_dir / rel, annotations, classes, result, raw_dir))
            except AnnotationError as exc:
                quarantine.append({"path": rel.as_posix(), "reason": str(exc)})
                log.warning("quarantined %s: %s", rel, exc)
                continue
            row["label"] = label or row["box_labels"].split(";")[0]
        manifest.append(row)

    manifest.sort(key=lambda r: str(r["path"]))
    quarantine.sort(key=lambda r: r["path"])
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ProbeSummary(
        manifest=write_csv(
            out_dir / "manifest.csv", manifest, MANIFEST_COLUMNS + (ANNOTATION_COLUMNS if annotations else [])
        ),
        quarantine=write_csv(out_dir / "quarantine.csv", quarantine, QUARANTINE_COLUMNS),
        usable=len(manifest),
        quarantined=len(quarantine),
    )
    for row in manifest:
        summary.by_label[str(row["label"])] = summary.by_label.get(str(row["label"]), 0) + 1
    return summary
