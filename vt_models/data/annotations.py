"""Box annotations of videos: reading the two supported formats and validating them.

One sidecar file per video, next to it:

- ``<stem>.boxes.csv``: MOT-style, header ``frame,track_id,x,y,w,h,label``; ``frame`` is the
  0-based frame index in the video, ``x, y`` the top-left corner, all in source pixels. The
  sample data set writes this format.
- ``<stem>.gt.txt``: MOTChallenge ``gt.txt`` rows, as MOTChallenge and CVAT's "MOT 1.1" export write them: no
  header, ``frame,id,x,y,w,h[,conf,class,visibility,...]`` with 1-based frames. A row whose ``conf`` is 0 is one
  to ignore and is dropped. The label is the ``class`` column's name in ``<stem>.labels.txt`` (one name per
  line, class 1 first, as CVAT's ``labels.txt``), else the class id as written (``"1"``; map it with
  ``detect.class_map``), else ``object`` where the column is missing or -1 (MOT15).
- ``<stem>.coco.json``: COCO-style, ``{"images": [...], "annotations": [...], "categories": [...]}``.
  An image's frame comes from ``frame_index`` (0-based), else from the trailing digits of its
  ``file_name`` (``frame_000012.png`` -> 12, as CVAT exports video frames); an annotation's
  ``bbox`` is ``[x, y, w, h]``; its track is ``track_id`` (or ``attributes.track_id``), else the
  annotation ``id`` (one track per box: tracking cannot be scored then).

:func:`validate` checks boxes against the probed video (overlapping the frame, positive size, known
label, existing frame, one box per track and frame); the probe quarantines videos that fail. A box that
reaches past the frame's edge is kept, clipped to the frame.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MOT_HEADER = ("frame", "track_id", "x", "y", "w", "h", "label")
SUFFIXES = {"mot": ".boxes.csv", "motchallenge": ".gt.txt", "coco": ".coco.json"}
LABELS_SUFFIX = ".labels.txt"  # class names of a .gt.txt, one a line (CVAT's MOT 1.1 labels.txt)
MOTCHALLENGE_DEFAULT_LABEL = "object"  # no class column, or -1 in it (MOT15)
EDGE_TOLERANCE_PX = 1.0  # rounding in annotation tools puts edges a fraction of a pixel outside


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file, the place and the fix."""


@dataclass(frozen=True)
class Box:
    frame: int
    track_id: int
    x: float
    y: float
    w: float
    h: float
    label: str


def sidecar(video: Path, fmt: str = "auto") -> Path | None:
    """The annotation file of ``video`` in format ``fmt`` (``auto``: whichever exists, MOT first)."""
    formats = list(SUFFIXES) if fmt == "auto" else [fmt]
    for name in formats:
        path = video.with_name(video.stem + SUFFIXES[name])
        if path.is_file():
            return path
    return None


def is_annotation_file(path: Path) -> bool:
    return path.name.endswith(tuple(SUFFIXES.values()))


def read_annotations(path: Path | str) -> list[Box]:
    """Boxes of one annotation file (format from its suffix), sorted by frame then track."""
    path = Path(path)
    if path.name.endswith(SUFFIXES["mot"]):
        boxes = read_mot_csv(path)
    elif path.name.endswith(SUFFIXES["motchallenge"]):
        boxes = read_motchallenge(path)
    elif path.name.endswith(SUFFIXES["coco"]):
        boxes = read_coco_json(path)
    else:
        raise AnnotationError(
            f"{path}: unknown annotation format; name it <video stem> + one of {', '.join(SUFFIXES.values())}"
        )
    return sorted(boxes, key=lambda b: (b.frame, b.track_id))


def _csv_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read ({exc})") from None


def read_mot_csv(path: Path | str) -> list[Box]:
    path = Path(path)
    rows = _csv_rows(path)
    if not rows or tuple(c.strip() for c in rows[0]) != MOT_HEADER:
        if rows and _numeric(rows[0]):
            raise AnnotationError(
                f"{path}: no header, so these look like MOTChallenge gt.txt rows (1-based frames); rename the file "
                f"to {_stem(path, 'mot')}{SUFFIXES['motchallenge']}, or add the header {','.join(MOT_HEADER)} "
                "with 0-based frames"
            )
        raise AnnotationError(
            f"{path}: the header must be {','.join(MOT_HEADER)}, got {','.join(rows[0]) if rows else 'an empty file'}"
        )
    boxes = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(MOT_HEADER):
            raise AnnotationError(
                f"{path} line {line}: expected {len(MOT_HEADER)} fields ({','.join(MOT_HEADER)}), got {len(row)}"
            )
        try:
            frame, track = int(row[0]), int(row[1])
            x, y, w, h = (float(v) for v in row[2:6])
        except ValueError:
            raise AnnotationError(
                f"{path} line {line}: frame and track_id must be integers, x,y,w,h numbers: {row}"
            ) from None
        label = row[6].strip()
        if not label:
            raise AnnotationError(f"{path} line {line}: empty label")
        boxes.append(Box(frame, track, x, y, w, h, label))
    return boxes


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return len(row) >= 6


def _stem(path: Path, fmt: str) -> str:
    """The video stem of sidecar ``path`` in format ``fmt`` (``clip.gt.txt`` -> ``clip``)."""
    return path.name[: -len(SUFFIXES[fmt])]


def companion_files(path: Path) -> list[Path]:
    """The files besides ``path`` that its boxes read: a ``.gt.txt``'s ``.labels.txt``, if there is one."""
    if not path.name.endswith(SUFFIXES["motchallenge"]):
        return []
    names_file = path.with_name(_stem(path, "motchallenge") + LABELS_SUFFIX)
    return [names_file] if names_file.is_file() else []


def _motchallenge_names(path: Path) -> dict[int, str] | None:
    """Class id -> name from the ``<stem>.labels.txt`` beside ``path``, if there is one."""
    found = companion_files(path)
    if not found:
        return None
    names_file = found[0]
    try:
        lines = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{names_file}: cannot read ({exc})") from None
    return {i: name for i, name in enumerate((x for x in lines if x), start=1)}


def read_motchallenge(path: Path | str) -> list[Box]:
    """MOTChallenge / CVAT MOT 1.1 ``gt.txt`` rows (no header, 1-based frames); see the module docstring."""
    path = Path(path)
    rows = _csv_rows(path)
    names = _motchallenge_names(path)
    boxes = []
    for line, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        try:
            frame, track = int(float(row[0])), int(float(row[1]))
            x, y, w, h = (float(v) for v in row[2:6])
            conf = float(row[6]) if len(row) > 6 else 1.0
            cls = int(float(row[7])) if len(row) > 7 else -1
        except (ValueError, IndexError):
            raise AnnotationError(
                f"{path} line {line}: expected MOTChallenge rows frame,id,x,y,w,h[,conf,class,visibility] of "
                f"numbers, with no header, got {row}"
            ) from None
        if frame < 1:
            raise AnnotationError(f"{path} line {line}: frame {frame}; MOTChallenge frames start at 1")
        if conf == 0:  # MOTChallenge / CVAT: a row to ignore
            continue
        if cls <= 0:
            label = MOTCHALLENGE_DEFAULT_LABEL
        elif names is None:
            label = str(cls)
        elif cls in names:
            label = names[cls]
        else:
            raise AnnotationError(
                f"{path} line {line}: class {cls} has no line in {_stem(path, 'motchallenge')}{LABELS_SUFFIX} "
                f"({len(names)} names); add its name there"
            )
        boxes.append(Box(frame - 1, track, x, y, w, h, label))
    return boxes


def _frame_of(image: dict, path: Path) -> int:
    if "frame_index" in image:
        return int(image["frame_index"])
    match = re.search(r"(\d+)\D*$", str(image.get("file_name", "")))
    if match is None:
        raise AnnotationError(
            f"{path}: image {image.get('id')} has neither frame_index nor a frame number in file_name"
        )
    return int(match.group(1))


def read_coco_json(path: Path | str) -> list[Box]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise AnnotationError(f"{path}: a COCO file needs the keys images, annotations and categories")
    try:
        frames = {img["id"]: _frame_of(img, path) for img in data["images"]}
        names = {cat["id"]: str(cat["name"]) for cat in data["categories"]}
        boxes = []
        for ann in data["annotations"]:
            where = f"{path}: annotation {ann.get('id')}"
            if ann.get("image_id") not in frames:
                raise AnnotationError(f"{where}: image_id {ann.get('image_id')} is not among the images")
            if ann.get("category_id") not in names:
                raise AnnotationError(f"{where}: category_id {ann.get('category_id')} is not among the categories")
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise AnnotationError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
            track = ann.get("track_id", (ann.get("attributes") or {}).get("track_id", ann.get("id")))
            x, y, w, h = (float(v) for v in bbox)
            boxes.append(Box(frames[ann["image_id"]], int(track), x, y, w, h, names[ann["category_id"]]))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, AnnotationError):
            raise
        raise AnnotationError(f"{path}: malformed COCO content ({type(exc).__name__}: {exc})") from None
    return boxes


def validate(boxes: list[Box], num_frames: int, width: int, height: int, classes: list[str] | None, source: str) -> int:
    """Raise :class:`AnnotationError` with the first problem: every box must fit the probed video. Returns how
    many boxes reach past the frame's edge (by more than ``EDGE_TOLERANCE_PX``): they are kept, clipped to the
    frame (:func:`to_arrays`), as MOTChallenge annotates people leaving the frame with their whole box."""
    seen: set[tuple[int, int]] = set()
    clipped = 0
    tol = EDGE_TOLERANCE_PX
    if not boxes:
        raise AnnotationError(f"{source}: no boxes; annotate the video or remove the file")
    for b in boxes:
        where = f"{source}: frame {b.frame}, track {b.track_id}"
        if not 0 <= b.frame < num_frames:
            raise AnnotationError(
                f"{where}: frame does not exist (the video has frames 0..{num_frames - 1}); frames are 0-based"
            )
        if not (b.w > 0 and b.h > 0):
            raise AnnotationError(f"{where}: box size {b.w}x{b.h} must be positive")
        if min(b.x + b.w, width) - max(b.x, 0.0) <= 0 or min(b.y + b.h, height) - max(b.y, 0.0) <= 0:
            raise AnnotationError(
                f"{where}: box x={b.x:g} y={b.y:g} w={b.w:g} h={b.h:g} lies entirely outside the {width}x{height} "
                f"frame; fix its coordinates (pixels of the video as decoded, top-left x,y) or drop the row"
            )
        clipped += b.x < -tol or b.y < -tol or b.x + b.w > width + tol or b.y + b.h > height + tol
        if classes is not None and b.label not in classes:
            raise AnnotationError(f"{where}: label {b.label!r} is not in detect.classes {classes}")
        if (b.frame, b.track_id) in seen:
            raise AnnotationError(f"{where}: two boxes of the same track in one frame")
        seen.add((b.frame, b.track_id))
    return clipped


def to_arrays(boxes: list[Box], width: int, height: int) -> dict[str, np.ndarray]:
    """Boxes as arrays (xyxy clipped to the frame): what the frames store keeps next to the pixels."""
    xyxy = np.array([[b.x, b.y, b.x + b.w, b.y + b.h] for b in boxes], np.float64).reshape(-1, 4)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
    return {
        "frame": np.array([b.frame for b in boxes], np.int64),
        "track": np.array([b.track_id for b in boxes], np.int64),
        "xyxy": xyxy,
        "label": np.array([b.label for b in boxes], dtype=np.str_).reshape(-1),
    }
