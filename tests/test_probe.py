from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from vt_models.config import ProbeConfig
from vt_models.data.probe import ProbeError, find_videos, group_of, probe_dataset
from vt_models.io.files import read_csv
from vt_models.parallel import Failure, run_isolated

from .videos import good_mp4, hostile_set


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_hostile_files_end_where_they_should(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    expect = hostile_set(raw)
    before = _tree_digest(raw)
    summary = probe_dataset(raw, tmp_path / "out", ProbeConfig(timeout_s=20), progress=False)

    manifest = {r["path"]: r for r in read_csv(tmp_path / "out" / "manifest.csv")}
    quarantine = {r["path"]: r["reason"] for r in read_csv(tmp_path / "out" / "quarantine.csv")}
    assert set(manifest) & set(quarantine) == set()
    got = {**{p: "manifest" for p in manifest}, **{p: "quarantine" for p in quarantine}}
    assert got == expect, "every video file ends in exactly one of the two files"
    assert summary.usable == len(manifest) and summary.quarantined == len(quarantine)
    assert _tree_digest(raw) == before, "the raw folder is never modified"

    assert quarantine["cls/zero.mp4"] == "empty file (0 bytes)"
    assert "no video stream" in quarantine["cls/audio only.mp4"]
    assert "too short" in quarantine["cls/one frame.mp4"] and "min_frames" in quarantine["cls/one frame.mp4"]
    for name in ("text.mp4", "random.mkv", "truncated.mp4"):
        assert quarantine[f"cls/{name}"], name
    # The header claims 40 frames; the probe reports what really decodes.
    lying = manifest["cls/truncated faststart.mp4"]
    assert 8 <= int(lying["num_frames"]) < 40 and lying["backend"] == "pyav"

    good = manifest["cls/good.mp4"]
    assert good["label"] == "cls" and int(good["num_frames"]) == 12 and float(good["fps"]) == 10.0
    assert (int(good["width"]), int(good["height"])) == (64, 48)
    assert good["md5"] == hashlib.md5((raw / "cls/good.mp4").read_bytes()).hexdigest()
    assert int(good["size_bytes"]) == (raw / "cls/good.mp4").stat().st_size
    assert (int(manifest["cls/odd dims.avi"]["width"]), int(manifest["cls/odd dims.avi"]["height"])) == (63, 47)
    assert manifest["cls/vp9.webm"]["codec"] == "vp9"


def test_extensions_are_case_insensitive_and_hidden_files_skipped(tmp_path: Path) -> None:
    good_mp4(tmp_path / "a" / "x.MP4")
    good_mp4(tmp_path / "a" / "y.Mkv", codec="libx264")
    (tmp_path / "a" / "z.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    good_mp4(tmp_path / ".hidden" / "h.mp4")
    assert [p.as_posix() for p in find_videos(tmp_path, [".mp4", ".mkv"])] == ["a/x.MP4", "a/y.Mkv"]


def test_files_outside_class_folders_are_quarantined(tmp_path: Path) -> None:
    good_mp4(tmp_path / "raw" / "loose.mp4")
    good_mp4(tmp_path / "raw" / "walk" / "w_r001_c01.mp4")
    summary = probe_dataset(tmp_path / "raw", tmp_path / "out", progress=False)
    q = read_csv(tmp_path / "out" / "quarantine.csv")
    assert summary.usable == 1 and [r["path"] for r in q] == ["loose.mp4"]
    assert "class folder" in q[0]["reason"]
    assert read_csv(tmp_path / "out" / "manifest.csv")[0]["group"] == "w_r001"


def test_labels_csv_with_groups(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for name in ("a.mp4", "b.mp4", "unlisted.mp4"):
        good_mp4(raw / name)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,group\na.mp4,jump,rec1\nb.mp4,run,\nmissing.mp4,run,rec9\n")
    probe_dataset(raw, tmp_path / "out", labels_csv=csv, progress=False)
    rows = {r["path"]: r for r in read_csv(tmp_path / "out" / "manifest.csv")}
    assert (rows["a.mp4"]["label"], rows["a.mp4"]["group"]) == ("jump", "rec1")
    assert (rows["b.mp4"]["label"], rows["b.mp4"]["group"]) == ("run", "b")
    q = {r["path"]: r["reason"] for r in read_csv(tmp_path / "out" / "quarantine.csv")}
    assert "not listed in labels CSV" in q["unlisted.mp4"]
    assert "no such video file" in q["missing.mp4"]


def test_labels_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.mp4,a\n")
    with pytest.raises(ProbeError, match="bad.csv: header must contain 'path' and 'label'"):
        probe_dataset(tmp_path / "raw", tmp_path / "out", labels_csv=bad, progress=False)
    bad.write_text("path,label\nx.mp4,a\nx.mp4,b\n")
    with pytest.raises(ProbeError, match="line 3"):
        probe_dataset(tmp_path / "raw", tmp_path / "out", labels_csv=bad, progress=False)
    with pytest.raises(ProbeError, match="does not exist"):
        probe_dataset(tmp_path / "nope", tmp_path / "out", progress=False)


def test_group_regex() -> None:
    import re

    pattern = re.compile(ProbeConfig().group_regex)
    assert group_of("v_ApplyEyeMakeup_g08_c01", pattern) == "v_ApplyEyeMakeup_g08"
    assert group_of("zoom_in_r004_c01", pattern) == "zoom_in_r004"
    assert group_of("standalone", pattern) == "standalone"


def _sleepy(x: int) -> int:
    if x == 1:
        time.sleep(60)
    if x == 2:
        os.kill(os.getpid(), 11)  # a decoder segfault
    if x == 3:
        raise ValueError("bad input")
    return x * 10


def test_run_isolated_bounds_time_and_survives_crashes() -> None:
    start = time.monotonic()
    out = dict(run_isolated(_sleepy, [0, 1, 2, 3, 4], workers=2, timeout_s=2, progress=False))
    assert time.monotonic() - start < 20
    assert out[0] == 0 and out[4] == 40
    assert isinstance(out[1], Failure) and "timed out after 2s" in out[1].reason
    assert isinstance(out[2], Failure) and "signal 11" in out[2].reason
    assert out[3] == Failure("bad input")


def _pid(_: int) -> int:
    return os.getpid()


def test_run_isolated_keeps_its_workers_from_item_to_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker takes item after item (a fork per item cost more than the work), up to ITEMS_PER_WORKER."""
    from collections import Counter

    import vt_models.parallel as parallel

    pids = dict(run_isolated(_pid, range(8), workers=2, progress=False))
    assert len(set(pids.values())) <= 2 and os.getpid() not in pids.values()
    monkeypatch.setattr(parallel, "ITEMS_PER_WORKER", 2)
    pids = dict(run_isolated(_pid, range(8), workers=2, progress=False))
    served = Counter(pids.values())
    assert max(served.values()) == 2 and len(served) >= 4


def test_an_idle_worker_ends_when_told_even_with_others_holding_its_pipe() -> None:
    """A later fork holds a copy of an earlier worker's pipe, so closing ours is no EOF to it: the stop message
    ends it at once (before, each retirement waited 5 s and killed it: 720 videos probed in 47 s, not 16 s)."""
    from vt_models.parallel import _context, _start_worker, _stop_worker

    first = _start_worker(_context(), _pid, quiet=True)
    second = _start_worker(_context(), _pid, quiet=True)
    try:
        _stop_worker(first)
        assert first.proc.exitcode == 0  # it returned; -9 would mean it was killed after the join timed out
    finally:
        _stop_worker(second)
    assert second.proc.exitcode == 0


def test_a_missing_video_is_named(tmp_path: Path) -> None:
    """Both decoders say only "No such file or directory": the error names the file, for every backend."""
    from vt_models.video.decode import open_video

    for backend in ("auto", "pyav", "decord"):
        with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'gone.mp4'}: no such video file"):
            open_video(tmp_path / "gone.mp4", backend=backend)


def test_pyav_fallback_when_decord_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vt_models.data.probe as probe_mod
    import vt_models.video.decode as decode_mod

    monkeypatch.setattr(probe_mod, "decord_available", lambda: False)
    monkeypatch.setattr(decode_mod, "decord_available", lambda: False)
    good_mp4(tmp_path / "raw" / "a" / "x.mp4", n_frames=14)
    probe_dataset(tmp_path / "raw", tmp_path / "out", progress=False)
    row = read_csv(tmp_path / "out" / "manifest.csv")[0]
    assert row["backend"] == "pyav" and row["num_frames"] == "14"
    from vt_models.config import ExtractConfig
    from vt_models.data.extract import extract_dataset

    s = extract_dataset(
        tmp_path / "out" / "manifest.csv",
        tmp_path / "raw",
        tmp_path / "frames",
        ExtractConfig(num_frames=4, short_side=24),
        progress=False,
    )
    assert (s.extracted, s.failed) == (1, 0)


def _bright_centroid(frame) -> tuple[float, float]:
    import numpy as np

    rows, cols = np.nonzero(frame[..., 0] > 200)
    return float(rows.mean()), float(cols.mean())


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_a_rotated_phone_video_is_read_as_a_player_shows_it(tmp_path: Path, rotation: int) -> None:
    """A portrait phone video is stored landscape with a display rotation: read as stored, a motion to
    the right would be one downwards (or upwards), another class. Frames and sizes come out as displayed."""
    import numpy as np

    from vt_models.video.decode import DecodeError, DecordReader, decord_available, open_video
    from vt_models.video.encode import write_video

    from .videos import moving_square

    stored = moving_square(12, width=64, height=48)  # a bright square moving right
    path = write_video(tmp_path / "raw" / "a" / "phone.mp4", stored, 10, display_rotation=rotation)
    shown = np.rot90(stored, rotation // 90, axes=(1, 2))  # counter-clockwise, as a player turns it
    reader = open_video(path)
    assert reader.info.backend == "pyav" and (reader.info.height, reader.info.width) == shown.shape[1:3]
    frames = reader.read([0, 11])
    assert frames.shape[1:] == shown.shape[1:]
    for got, want in zip(frames, shown[[0, 11]], strict=True):
        assert np.allclose(_bright_centroid(got), _bright_centroid(want), atol=1.5)
    if decord_available():  # decord would fail on it: the error says why and PyAV takes over
        with pytest.raises(DecodeError, match="display rotation"):
            DecordReader(path)
    probe_dataset(tmp_path / "raw", tmp_path / "out", progress=False)
    row = read_csv(tmp_path / "out" / "manifest.csv")[0]
    assert (int(row["height"]), int(row["width"]), row["backend"]) == (*shown.shape[1:3], "pyav")
