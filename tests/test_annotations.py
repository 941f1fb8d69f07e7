"""Box annotations: both formats read the same, broken ones are quarantined with the reason, and
extraction keeps boxes aligned with the sampled, resized frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vt_models.config import ExtractConfig, ProbeConfig
from vt_models.data.annotations import (
    AnnotationError,
    Box,
    read_annotations,
    read_coco_json,
    read_mot_csv,
    read_motchallenge,
    to_arrays,
    validate,
)
from vt_models.data.extract import extract_dataset, load_index
from vt_models.data.frames import load_boxes, load_frames
from vt_models.data.probe import probe_dataset
from vt_models.data.synth import write_boxes_csv

from .videos import good_mp4

W, H, N, SIDE = 64, 48, 12, 12  # tests/videos.moving_square: a 12 px square at y = H // 3


def square_boxes(n: int = N, label: str = "square") -> list[Box]:
    return [
        Box(t, 1, float(int(t * (W - SIDE) / (n - 1))), float(H // 3), float(SIDE), float(SIDE), label)
        for t in range(n)
    ]


def coco_for(boxes: list[Box], path: Path) -> Path:
    labels = sorted({b.label for b in boxes})
    data = {
        "images": [
            {"id": 100 + f, "file_name": f"frame_{f:06d}.png", "width": W, "height": H}
            for f in sorted({b.frame for b in boxes})
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 100 + b.frame,
                "bbox": [b.x, b.y, b.w, b.h],
                "category_id": labels.index(b.label) + 7,
                "attributes": {"track_id": b.track_id},
            }
            for i, b in enumerate(boxes)
        ],
        "categories": [{"id": i + 7, "name": name} for i, name in enumerate(labels)],
    }
    path.write_text(json.dumps(data))
    return path


def test_mot_and_coco_read_the_same_boxes(tmp_path: Path) -> None:
    boxes = square_boxes()
    write_boxes_csv(tmp_path / "a.boxes.csv", boxes)
    mot = read_annotations(tmp_path / "a.boxes.csv")
    coco = read_annotations(coco_for(boxes, tmp_path / "a.coco.json"))
    assert mot == coco == boxes


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("frame,track,x,y,w,h,label\n", "the header must be"),
        ("frame,track_id,x,y,w,h,label\n0,1,1,2,3\n", "line 2: expected 7 fields"),
        ("frame,track_id,x,y,w,h,label\nzero,1,1,2,3,4,a\n", "line 2: frame and track_id must be integers"),
        ("frame,track_id,x,y,w,h,label\n0,1,1,2,3,4,\n", "line 2: empty label"),
    ],
)
def test_mot_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "v.boxes.csv"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as err:
        read_mot_csv(path)
    assert str(path) in str(err.value)


def motchallenge_for(boxes: list[Box], path: Path, names: list[str] | None = None) -> Path:
    """``boxes`` as MOTChallenge gt.txt rows (1-based frames, conf 1, class ids into ``names``, visibility 1)."""
    names = names or sorted({b.label for b in boxes})
    rows = [f"{b.frame + 1},{b.track_id},{b.x},{b.y},{b.w},{b.h},1,{names.index(b.label) + 1},1.0" for b in boxes]
    path.write_text("\n".join(rows) + "\n")
    path.with_name(path.name.replace(".gt.txt", ".labels.txt")).write_text("\n".join(names) + "\n")
    return path


def test_motchallenge_rows_read_as_the_same_boxes(tmp_path: Path) -> None:
    boxes = square_boxes()
    gt = motchallenge_for(boxes, tmp_path / "a.gt.txt", names=["person", "square"])
    assert read_annotations(gt) == boxes  # 1-based frames -> 0-based, class 2 -> its name in a.labels.txt
    # a row with conf 0 is one to ignore; without labels.txt the class id is the label; MOT15 (-1) is "object"
    gt.with_name("a.labels.txt").unlink()
    gt.write_text("1,1,1,2,3,4,1,1,1\n1,2,5,5,3,3,0,1,1\n2,3,1,1,5,5,1,-1,-1,-1\n3,4,2,2,4,4\n")
    assert read_motchallenge(gt) == [
        Box(0, 1, 1, 2, 3, 4, "1"),
        Box(1, 3, 1, 1, 5, 5, "object"),
        Box(2, 4, 2, 2, 4, 4, "object"),
    ]


@pytest.mark.parametrize(
    ("content", "labels", "message"),
    [
        ("frame,id,x,y,w,h\n1,1,1,1,2,2\n", None, "line 1: expected MOTChallenge rows"),
        ("1,1,1,1,2\n", None, "line 1: expected MOTChallenge rows"),
        ("0,1,1,1,2,2,1,1,1\n", None, "line 1: frame 0; MOTChallenge frames start at 1"),
        ("1,1,1,1,2,2,1,3,1\n", "person\ncar\n", "class 3 has no line in v.labels.txt"),
    ],
)
def test_motchallenge_errors_name_file_and_line(tmp_path: Path, content: str, labels: str | None, message: str) -> None:
    path = tmp_path / "v.gt.txt"
    path.write_text(content)
    if labels is not None:
        (tmp_path / "v.labels.txt").write_text(labels)
    with pytest.raises(AnnotationError, match=message) as err:
        read_annotations(path)
    assert str(path) in str(err.value)


def test_a_headerless_boxes_csv_is_refused_with_the_rename(tmp_path: Path) -> None:
    path = tmp_path / "clip.boxes.csv"
    path.write_text("1,1,1,1,2,2,1,1,1\n")
    with pytest.raises(AnnotationError, match="rename the file to clip.gt.txt"):
        read_annotations(path)


def test_coco_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "v.coco.json"
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="not readable JSON"):
        read_coco_json(path)
    path.write_text(
        json.dumps(
            {
                "images": [],
                "annotations": [{"id": 1, "image_id": 5, "bbox": [0, 0, 1, 1], "category_id": 1}],
                "categories": [{"id": 1, "name": "a"}],
            }
        )
    )
    with pytest.raises(AnnotationError, match="image_id 5 is not among the images"):
        read_coco_json(path)


@pytest.mark.parametrize(
    ("boxes", "classes", "message"),
    [
        ([Box(0, 1, 64.0, 5.0, 10.0, 10.0, "a")], None, "entirely outside the 64x48 frame"),
        ([Box(0, 1, -13.0, 5.0, 10.0, 10.0, "a")], None, "entirely outside the 64x48 frame"),
        ([Box(0, 1, 5.0, 48.5, 10.0, 10.0, "a")], None, "entirely outside the 64x48 frame"),
        ([Box(12, 1, 1.0, 1.0, 5.0, 5.0, "a")], None, "frame does not exist"),
        ([Box(0, 1, 1.0, 1.0, 0.0, 5.0, "a")], None, "must be positive"),
        ([Box(0, 1, 1.0, 1.0, 5.0, 5.0, "cat")], ["a", "b"], "label 'cat' is not in detect.classes"),
        ([Box(0, 1, 1.0, 1.0, 5.0, 5.0, "a"), Box(0, 1, 9.0, 1.0, 5.0, 5.0, "a")], None, "two boxes of the same track"),
        ([], None, "no boxes"),
    ],
)
def test_validate_rejects_what_does_not_fit_the_video(
    boxes: list[Box], classes: list[str] | None, message: str
) -> None:
    with pytest.raises(AnnotationError, match=message):
        validate(boxes, N, W, H, classes, "v.boxes.csv")


def test_validate_accepts_edges_within_a_pixel() -> None:
    assert validate([Box(0, 1, -0.5, 0.0, 64.4, 48.0, "a")], N, W, H, ["a"], "v.boxes.csv") == 0


def test_boxes_past_the_frame_edge_are_kept_and_clipped() -> None:
    # MOTChallenge keeps the whole box of a person walking out of the frame
    boxes = [Box(0, 1, 60.0, 5.0, 10.0, 10.0, "a"), Box(0, 2, -3.0, 40.0, 10.0, 20.0, "a"), Box(1, 1, 1, 1, 5, 5, "a")]
    assert validate(boxes, N, W, H, ["a"], "v.boxes.csv") == 2
    assert to_arrays(boxes, W, H)["xyxy"].tolist() == [[60, 5, 64, 15], [0, 40, 7, 48], [1, 1, 6, 6]]


def test_broken_annotations_are_quarantined_the_rest_proceed(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    good = [("cls/good_mot", "mot"), ("cls/good_coco", "coco"), ("cls/good_gt", "gt"), ("flat_video", "mot")]
    for name, fmt in good:
        video = good_mp4(raw / f"{name}.mp4", n_frames=N)
        if fmt == "mot":
            write_boxes_csv(video.with_name(video.stem + ".boxes.csv"), square_boxes())
        elif fmt == "gt":
            motchallenge_for(square_boxes(), video.with_name(video.stem + ".gt.txt"))
        else:
            coco_for(square_boxes(), video.with_name(video.stem + ".coco.json"))
    good_mp4(raw / "cls/no_boxes.mp4", n_frames=N)
    leaving = good_mp4(raw / "cls/leaving.mp4", n_frames=N)  # a box past the edge: kept, clipped
    write_boxes_csv(leaving.with_name("leaving.boxes.csv"), [*square_boxes(), Box(0, 9, 58, 40, 12, 12, "square")])
    broken = {
        "outside": [Box(0, 1, 70.0, 5.0, 10.0, 10.0, "square")],
        "late": [Box(N + 3, 1, 1.0, 1.0, 5.0, 5.0, "square")],
        "unknown": [Box(0, 1, 1.0, 1.0, 5.0, 5.0, "cat")],
    }
    for name, boxes in broken.items():
        video = good_mp4(raw / f"cls/{name}.mp4", n_frames=N)
        write_boxes_csv(video.with_name(video.stem + ".boxes.csv"), boxes)
    (raw / "cls/garbled.boxes.csv").write_text("nonsense\n")
    good_mp4(raw / "cls/garbled.mp4", n_frames=N)
    (raw / "cls/headerless.boxes.csv").write_text("1,1,1,1,5,5,1,1,1\n")  # MOTChallenge rows, misnamed
    good_mp4(raw / "cls/headerless.mp4", n_frames=N)

    summary = probe_dataset(
        raw, tmp_path / "probe", ProbeConfig(workers=1), progress=False, annotations="auto", classes=["square"]
    )
    manifest = {r.split(",")[0]: r for r in (tmp_path / "probe/manifest.csv").read_text().splitlines()[1:]}
    reasons = {r.split(",")[0]: r for r in (tmp_path / "probe/quarantine.csv").read_text().splitlines()[1:]}
    assert set(manifest) == {
        "cls/good_mot.mp4",
        "cls/good_coco.mp4",
        "cls/good_gt.mp4",
        "cls/leaving.mp4",
        "flat_video.mp4",
    }
    assert summary.usable == 5 and summary.quarantined == 6
    expected = "no box annotations: expected no_boxes.boxes.csv or no_boxes.gt.txt or no_boxes.coco.json"
    assert expected in reasons["cls/no_boxes.mp4"]
    assert "rename the file to headerless.gt.txt" in reasons["cls/headerless.mp4"]
    assert "entirely outside the 64x48 frame" in reasons["cls/outside.mp4"]
    assert "frame does not exist" in reasons["cls/late.mp4"]
    assert "label 'cat' is not in detect.classes" in reasons["cls/unknown.mp4"]
    assert "header must be" in reasons["cls/garbled.mp4"]
    # a video outside a class folder is fine for detection: its label is its most frequent box label
    assert manifest["flat_video.mp4"].split(",")[1] == "square"
    # the classification probe of the same folder is unaffected by annotations
    plain = probe_dataset(raw, tmp_path / "plain", ProbeConfig(workers=1), progress=False)
    assert plain.usable == 10 and plain.quarantined == 1  # only the file outside a class folder

    # the detection probe reuses the classifier probe's manifest: unchanged videos are not decoded again, a
    # re-encoded one is, and the result is the same manifest and quarantine as probing everything
    good_mp4(raw / "cls/good_coco.mp4", n_frames=N + 2)  # new bytes, same path, after the plain probe
    decoded: list[str] = []

    def mapper(fn, jobs):
        for job in jobs:
            decoded.append(job[0].name)
            yield job, fn(job)

    again = probe_dataset(
        raw,
        tmp_path / "again",
        ProbeConfig(workers=1),
        progress=False,
        mapper=mapper,
        annotations="auto",
        classes=["square"],
        reuse=tmp_path / "plain/manifest.csv",
    )
    assert sorted(decoded) == ["flat_video.mp4", "good_coco.mp4"]  # not in the plain manifest; changed
    fresh = probe_dataset(
        raw, tmp_path / "fresh", ProbeConfig(workers=1), progress=False, annotations="auto", classes=["square"]
    )
    assert (again.usable, again.quarantined) == (fresh.usable, fresh.quarantined) == (5, 6)
    for name in ("manifest.csv", "quarantine.csv"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "fresh" / name).read_text()
    assert f",{N + 2}," in (tmp_path / "again/manifest.csv").read_text()  # the re-encoded video's frame count


def test_extract_keeps_boxes_aligned_with_resized_frames(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    n, w, h = 20, 128, 96
    video = good_mp4(raw / "cls/v.mp4", n_frames=n, width=w, height=h)
    side = 12  # moving_square draws 12 px squares at any size
    boxes = [
        Box(t, 1, float(int(t * (w - side) / (n - 1))), float(h // 3), float(side), float(side), "square")
        for t in range(n)
    ]
    write_boxes_csv(video.with_name("v.boxes.csv"), boxes)
    probe_dataset(raw, tmp_path / "probe", ProbeConfig(workers=1), progress=False, annotations="mot")
    cfg = ExtractConfig(
        mode="fps", fps=5.0, max_frames=8, short_side=48, workers=1
    )  # 10 fps video: every 2nd frame, scale 0.5
    extract_dataset(tmp_path / "probe/manifest.csv", raw, tmp_path / "frames", cfg, progress=False)
    entry = load_index(tmp_path / "frames")["videos"][0]
    stored = load_frames(tmp_path / "frames" / entry["file"])
    stored_boxes = load_boxes(tmp_path / "frames" / entry["file"])
    assert entry["num_boxes"] == len(stored.frame_indices) == 8
    assert stored.frames.shape[1:3] == (48, 64)
    for pos, src in enumerate(stored.frame_indices):
        xyxy, labels, tracks = stored_boxes.at(pos)
        x = int(src * (w - side) / (n - 1))
        expected = np.array([[x, h // 3, x + side, h // 3 + side]]) * 0.5
        np.testing.assert_allclose(xyxy, expected, atol=1e-4)
        assert list(labels) == ["square"] and list(tracks) == [1]
        # and the pixels agree: the bright square is inside the box, dark around it
        x1, y1, x2, y2 = np.round(xyxy[0]).astype(int)
        frame = stored.frames[pos].astype(float)
        inside = frame[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1, 0].mean()
        assert inside > 180 and frame[:, :, 0].mean() < 80


def test_annotation_change_reextracts_only_that_video(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for seed, name in enumerate(("a", "b")):
        video = good_mp4(raw / f"cls/{name}.mp4", n_frames=N, seed=seed)  # distinct content: no shared output
        write_boxes_csv(video.with_name(f"{name}.boxes.csv"), square_boxes())
    cfg = ExtractConfig(mode="fps", fps=10.0, max_frames=12, short_side=48, workers=1)

    def run() -> object:
        probe_dataset(raw, tmp_path / "probe", ProbeConfig(workers=1), progress=False, annotations="auto")
        return extract_dataset(tmp_path / "probe/manifest.csv", raw, tmp_path / "frames", cfg, progress=False)

    assert run().extracted == 2
    write_boxes_csv(raw / "cls/b.boxes.csv", square_boxes(label="box"))
    second = run()
    assert (second.extracted, second.unchanged, second.removed) == (1, 1, 1)
    labels = {v["path"]: v["box_labels"] for v in load_index(tmp_path / "frames")["videos"]}
    assert labels == {"cls/a.mp4": ["square"], "cls/b.mp4": ["box"]}
    # a .gt.txt's classes are named in its labels file: renaming one there re-extracts that video
    (raw / "cls/a.boxes.csv").unlink()
    motchallenge_for(square_boxes(), raw / "cls/a.gt.txt")
    assert run().extracted == 1
    (raw / "cls/a.labels.txt").write_text("disc\n")
    third = run()
    assert (third.extracted, third.unchanged) == (1, 1)
    labels = {v["path"]: v["box_labels"] for v in load_index(tmp_path / "frames")["videos"]}
    assert labels == {"cls/a.mp4": ["disc"], "cls/b.mp4": ["box"]}
