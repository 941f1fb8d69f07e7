from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vt_models.config import ExtractConfig
from vt_models.data.extract import ExtractError, extract_dataset, load_index
from vt_models.data.frames import load_frames, resize_short_side, sample_indices
from vt_models.data.probe import probe_dataset

from .videos import good_mp4, moving_square

CFG = ExtractConfig(num_frames=6, short_side=32, workers=2)


def _dataset(root: Path, n: int = 4) -> Path:
    for i in range(n):
        good_mp4(root / ("a" if i % 2 else "b") / f"v{i}_c01.mp4", n_frames=12 + i, seed=i)
    return root


def _probe_extract(tmp: Path, cfg: ExtractConfig = CFG):
    probe_dataset(tmp / "raw", tmp / "probe", progress=False)
    return extract_dataset(tmp / "probe" / "manifest.csv", tmp / "raw", tmp / "frames", cfg, progress=False)


def test_sample_indices_modes() -> None:
    assert sample_indices(100, 25, ExtractConfig(mode="uniform", num_frames=4)).tolist() == [12, 37, 62, 87]
    seg = sample_indices(100, 25, ExtractConfig(mode="segments", num_segments=2, frames_per_segment=3))
    assert seg.tolist() == [23, 24, 25, 73, 74, 75]
    fps = sample_indices(100, 25.0, ExtractConfig(mode="fps", fps=5.0, max_frames=64))
    assert fps.tolist() == list(range(0, 100, 5))
    capped = sample_indices(100, 25.0, ExtractConfig(mode="fps", fps=25.0, max_frames=10))
    assert capped.tolist() == list(range(45, 55))
    short = sample_indices(3, 10, ExtractConfig(num_frames=6))
    assert len(short) == 6 and short.min() >= 0 and short.max() <= 2


def test_resize_short_side_keeps_aspect() -> None:
    out = resize_short_side(np.zeros((2, 48, 64, 3), np.uint8), 24)
    assert out.shape == (2, 24, 32, 3)
    tall = resize_short_side(np.zeros((1, 63, 47, 3), np.uint8), 20)
    assert tall.shape == (1, 27, 20, 3)


def test_extract_stores_sampled_frames_that_match_the_video(tmp_path: Path) -> None:
    _dataset(tmp_path / "raw", 2)
    summary = _probe_extract(tmp_path)
    assert (summary.extracted, summary.unchanged, summary.failed) == (2, 0, 0)
    index = load_index(tmp_path / "frames")
    entry = next(v for v in index["videos"] if v["path"] == "b/v0_c01.mp4")
    assert entry["label"] == "b" and entry["group"] == "v0" and len(entry["frame_indices"]) == 6
    stored = load_frames(tmp_path / "frames" / entry["file"])
    assert stored.frames.shape == (6, 32, 43, 3) and stored.src_size == (48, 64)
    # The moving square is at the right place in the sampled frames (after decode + resize + JPEG).
    reference = resize_short_side(moving_square(12)[stored.frame_indices], 32).astype(float)
    assert np.abs(stored.frames.astype(float) - reference).mean() < 12
    one = load_frames(tmp_path / "frames" / entry["file"], select=[2])
    assert one.frames.shape == (1, 32, 43, 3) and one.frame_indices.tolist() == [entry["frame_indices"][2]]
    assert len(list((tmp_path / "frames").glob("*.npz"))) == 2, "one compact file per video"


def test_extract_is_idempotent_and_incremental(tmp_path: Path) -> None:
    raw = _dataset(tmp_path / "raw", 4)
    _probe_extract(tmp_path)
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "frames").glob("*.npz")}
    index_bytes = (tmp_path / "frames" / "index.json").read_bytes()

    again = _probe_extract(tmp_path)
    assert (again.extracted, again.unchanged, again.removed) == (0, 4, 0)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "frames").glob("*.npz")} == files
    assert (tmp_path / "frames" / "index.json").read_bytes() == index_bytes

    # add one, change one, remove one, rename one: only new content is decoded
    good_mp4(raw / "a" / "new_c01.mp4", seed=99)
    good_mp4(raw / "b" / "v0_c01.mp4", n_frames=20, seed=50)
    (raw / "a" / "v1_c01.mp4").unlink()
    shutil.move(raw / "b" / "v2_c01.mp4", raw / "b" / "renamed_c01.mp4")
    inc = _probe_extract(tmp_path)
    assert (inc.extracted, inc.unchanged, inc.removed) == (2, 2, 2)
    paths = [v["path"] for v in load_index(tmp_path / "frames")["videos"]]
    assert paths == ["a/new_c01.mp4", "a/v3_c01.mp4", "b/renamed_c01.mp4", "b/v0_c01.mp4"]
    assert len(list((tmp_path / "frames").glob("*.npz"))) == 4


def test_changed_params_reextract_everything(tmp_path: Path) -> None:
    _dataset(tmp_path / "raw", 2)
    _probe_extract(tmp_path)
    redo = _probe_extract(tmp_path, ExtractConfig(num_frames=4, short_side=32))
    assert (redo.extracted, redo.unchanged) == (2, 0)
    index = load_index(tmp_path / "frames")
    assert all(len(v["frame_indices"]) == 4 for v in index["videos"])
    assert index["fingerprint"]["num_frames"] == 4


def test_extract_failure_is_recorded_not_fatal(tmp_path: Path) -> None:
    _dataset(tmp_path / "raw", 2)
    probe_dataset(tmp_path / "raw", tmp_path / "probe", progress=False)
    (tmp_path / "raw" / "a" / "v1_c01.mp4").write_bytes(b"corrupted after probing")
    s = extract_dataset(tmp_path / "probe" / "manifest.csv", tmp_path / "raw", tmp_path / "frames", CFG, progress=False)
    assert (s.extracted, s.failed) == (1, 1)
    failed = (tmp_path / "frames" / "failed.csv").read_text()
    assert "a/v1_c01.mp4" in failed
    assert [v["path"] for v in json.loads((tmp_path / "frames" / "index.json").read_text())["videos"]] == [
        "b/v0_c01.mp4"
    ]


def test_two_extracts_of_one_folder_take_turns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Overlapping scheduled runs extract into one folder: the second must wait for the first (each deletes the
    # temporary files and frames it does not list, which would be the first one's in flight), then find the
    # first one's frames done.
    _dataset(tmp_path / "raw", 3)
    probe_dataset(tmp_path / "raw", tmp_path / "probe", progress=False)
    inside, release = threading.Event(), threading.Event()

    def paused(fn, jobs):  # the first extract stops mid-way, holding the folder, until released
        inside.set()
        assert release.wait(60)
        return [(job, fn(job)) for job in jobs]

    def run(name: str, mapper) -> None:
        args = (tmp_path / "probe" / "manifest.csv", tmp_path / "raw", tmp_path / "frames", CFG, False, mapper)
        results[name] = extract_dataset(*args)

    results: dict[str, object] = {}
    caplog.set_level(logging.INFO, logger="vt_models.io.files")
    first = threading.Thread(target=run, args=("first", paused))
    first.start()
    assert inside.wait(60)
    second = threading.Thread(target=run, args=("second", lambda fn, jobs: [(j, fn(j)) for j in jobs]))
    second.start()
    deadline = time.monotonic() + 60
    while "waiting for another extract into" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "waiting for another extract into" in caplog.text
    assert second.is_alive(), "the second extract ran while the first held the folder"
    release.set()
    first.join(60)
    second.join(60)
    a, b = results["first"], results["second"]
    assert (a.extracted, a.unchanged, b.extracted, b.unchanged, b.removed) == (3, 0, 0, 3, 0)
    assert len(load_index(tmp_path / "frames")["videos"]) == 3
    assert len(list((tmp_path / "frames").glob("*.npz"))) == 3
    assert not list((tmp_path / "frames").glob(".*")), "only frames in the folder DVC hashes"


def test_extract_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="run `vt probe` first"):
        extract_dataset(tmp_path / "m.csv", tmp_path, tmp_path / "f", CFG, progress=False)
    with pytest.raises(ExtractError, match="run `vt extract`"):
        load_index(tmp_path)


def test_bench_extract_prints_figures(tmp_path: Path) -> None:
    from vt_models.bench import bench_extract

    lines: list[str] = []
    figures = bench_extract(videos=6, workers=1, workdir=tmp_path, echo=lines.append)
    assert figures["videos"] == 6 and figures["incremental_new_videos"] == 1
    assert figures["extract_frames_per_s"] > 0 and figures["baseline_frames_per_s"] > 0
    assert figures["frames_only_frames_per_s"] > 0 and any("frames only" in line for line in lines)
    assert 0 < figures["incremental_relative"] and any("speed-up" in line for line in lines)
