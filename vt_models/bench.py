"""Benchmarks that print figures (never timed tests): ``vt bench extract``."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vt_models.config import Config, ExtractConfig, ProbeConfig
from vt_models.data.extract import _Job, extract_dataset
from vt_models.data.frames import resize_short_side, sample_indices, save_frames
from vt_models.data.probe import probe_dataset
from vt_models.fsutil import read_csv
from vt_models.parallel import Failure, run_isolated


def _pyav_full_decode(job: _Job) -> int:
    """The naive baseline: decode every frame with PyAV, then keep the sampled ones."""
    import av
    import numpy as np

    with av.open(str(job.src)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    idx = sample_indices(len(frames), fps, job.cfg)
    chosen = np.stack([frames[i] for i in idx])
    save_frames(job.dst, resize_short_side(chosen, job.cfg.short_side), idx, chosen.shape[1:3], job.cfg.jpeg_quality)
    return len(idx)


def _bench_config(root: Path, clips_per_class: int, workers: int | None) -> Config:
    return Config.model_validate({
        "seed": 7,
        "data_dir": str(root / "data"),
        "sample": {
            "classes": ["left", "right", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out"],
            "domains": {"bench": {"clips_per_class": clips_per_class, "clips_per_recording": 2, "style": "textured"}},
            "sizes": [[160, 120], [176, 144], [128, 96]],
            "fps": [12, 15, 24],
            "duration_s": [1.5, 3.0],
            "workers": workers,
        },
        "datasets": {"bench": {"raw": str(root / "raw")}},
    })


def bench_extract(
    videos: int = 100, workers: int | None = None, workdir: Path | None = None,
    echo: Callable[[str], Any] = print,
) -> dict[str, float]:
    """Time extraction against a full-decode PyAV baseline and an incremental re-run after +1% videos."""
    from vt_models.data.synth import generate_sample

    root = Path(workdir or tempfile.mkdtemp(prefix="vt-bench-"))
    cfg = _bench_config(root, max(1, math.ceil(videos / 6)), workers)
    ecfg = ExtractConfig(workers=workers)
    echo(f"bench: generating {videos}+ sample videos in {root} ...")
    generate_sample(cfg, progress=False)
    raw = root / "raw"
    probe_dataset(raw, root / "probe", ProbeConfig(workers=workers), progress=False)
    rows = read_csv(root / "probe" / "manifest.csv")
    src_frames = sum(int(r["num_frames"]) for r in rows)

    shutil.rmtree(root / "frames", ignore_errors=True)
    t0 = time.perf_counter()
    full = extract_dataset(root / "probe" / "manifest.csv", raw, root / "frames", ecfg, progress=False)
    t_full = time.perf_counter() - t0

    jobs = [_Job(raw / r["path"], root / "baseline" / f"{r['md5']}.npz", "pyav", ecfg) for r in rows]
    t0 = time.perf_counter()
    results = list(run_isolated(_pyav_full_decode, jobs, workers=workers, timeout_s=ecfg.timeout_s, progress=False))
    t_base = time.perf_counter() - t0
    base_frames = sum(r for _, r in results if not isinstance(r, Failure))

    # +1% new videos (at least one): copies of existing clips re-encoded as new content.
    n_new = max(1, round(len(rows) * 0.01))
    from vt_models.video.decode import open_video
    from vt_models.video.encode import write_video

    for i, r in enumerate(rows[:n_new]):
        reader = open_video(raw / r["path"])
        frames = reader.read(range(reader.info.num_frames))[::-1].copy()  # reversed: new bytes, same size
        write_video(raw / r["label"] / f"bench_new_{i}_c01.mp4", frames, reader.info.fps or 12)
    probe_dataset(raw, root / "probe", ProbeConfig(workers=workers), progress=False)
    t0 = time.perf_counter()
    inc = extract_dataset(root / "probe" / "manifest.csv", raw, root / "frames", ecfg, progress=False)
    t_inc = time.perf_counter() - t0

    figures = {
        "videos": float(len(rows)),
        "source_frames": float(src_frames),
        "stored_frames": float(full.frames),
        "extract_s": t_full,
        "extract_frames_per_s": full.frames / t_full,
        "extract_source_frames_per_s": src_frames / t_full,
        "baseline_s": t_base,
        "baseline_frames_per_s": base_frames / t_base,
        "speedup": t_base / t_full,
        "incremental_new_videos": float(inc.extracted),
        "incremental_s": t_inc,
        "incremental_relative": t_inc / t_full,
    }
    w = workers or "all"
    echo(f"bench extract: {len(rows)} videos, {src_frames} source frames, {full.frames} stored frames, workers={w}")
    echo(f"  vt extract (decord, sampled decode) : {t_full:7.2f} s  {figures['extract_frames_per_s']:8.1f} stored frames/s  ({figures['extract_source_frames_per_s']:.0f} source frames/s)")
    echo(f"  baseline (PyAV full decode)        : {t_base:7.2f} s  {figures['baseline_frames_per_s']:8.1f} stored frames/s")
    echo(f"  speed-up over baseline             : {figures['speedup']:7.2f} x")
    echo(f"  re-run after +{n_new} new video(s) ({inc.extracted} extracted, {inc.unchanged} unchanged): {t_inc:.2f} s = {100 * figures['incremental_relative']:.1f}% of the full run")
    if workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return figures
