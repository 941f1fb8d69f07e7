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
from vt_models.io.files import read_csv
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
    return Config.model_validate(
        {
            "seed": 7,
            "data_dir": str(root / "data"),
            "sample": {
                "classes": ["left", "right", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out"],
                "domains": {
                    "target": {"clips_per_class": clips_per_class, "clips_per_recording": 2, "style": "textured"}
                },
                "sizes": [[160, 120], [176, 144], [128, 96]],
                "fps": [12, 15, 24],
                "duration_s": [1.5, 3.0],
                "workers": workers,
            },
            "datasets": {"target": {"raw": str(root / "raw")}},
            "pretrain": {"dataset": "target", "weights": "none"},
            "train": {"dataset": "target", "weights": "none"},
        }
    )


def bench_extract(
    videos: int = 100,
    workers: int | None = None,
    workdir: Path | None = None,
    echo: Callable[[str], Any] = print,
) -> dict[str, float]:
    """Time extraction (frames + optical flow) against frames alone on the same files, a full-decode PyAV
    baseline, and an incremental re-run after +1% videos."""
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

    t0 = time.perf_counter()  # the same files, frames only: what the flow costs
    extract_dataset(
        root / "probe" / "manifest.csv",
        raw,
        root / "frames_only",
        ecfg.model_copy(update={"flow": False}),
        progress=False,
    )
    t_plain = time.perf_counter() - t0

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
        "frames_only_s": t_plain,
        "frames_only_frames_per_s": full.frames / t_plain,
        "flow_cost_relative": t_full / t_plain,
        "baseline_s": t_base,
        "baseline_frames_per_s": base_frames / t_base,
        "speedup": t_base / t_full,
        "incremental_new_videos": float(inc.extracted),
        "incremental_s": t_inc,
        "incremental_relative": t_inc / t_full,
    }
    w = workers or "all"
    echo(f"bench extract: {len(rows)} videos, {src_frames} source frames, {full.frames} stored frames, workers={w}")
    echo(
        f"  vt extract (frames + Farneback flow): {t_full:7.2f} s  "
        f"{figures['extract_frames_per_s']:8.1f} stored frames/s  "
        f"({figures['extract_source_frames_per_s']:.0f} source frames/s)"
    )
    echo(
        f"  frames only (extract.flow: false)  : {t_plain:7.2f} s  "
        f"{figures['frames_only_frames_per_s']:8.1f} stored frames/s"
        f"  (frames + flow take {figures['flow_cost_relative']:.2f}x as long)"
    )
    echo(
        f"  baseline (PyAV full decode, no flow): {t_base:7.2f} s  "
        f"{figures['baseline_frames_per_s']:8.1f} stored frames/s"
    )
    echo(f"  speed-up over baseline             : {figures['speedup']:7.2f} x")
    echo(
        f"  re-run after +{n_new} new video(s) ({inc.extracted} extracted, {inc.unchanged} unchanged): "
        f"{t_inc:.2f} s = {100 * figures['incremental_relative']:.1f}% of the full run"
    )
    if workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return figures


def bench_train(
    cfg: Config,
    backbones: list[str],
    batches: int = 10,
    echo: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Clips/s of the data loader alone, the model step alone (synthetic input) and both together.

    Uses the ``train`` section of ``cfg`` and its data set's frames (run the pipeline first). On a GPU
    each backbone is measured with mixed precision on and off, and so on a CPU with bf16 matrix units (AMX).
    """
    import torch

    from vt_models.classify.data import load_split_data
    from vt_models.classify.runner import make_loaders
    from vt_models.classify.task import ClassificationTask
    from vt_models.models.builder import build_backbone
    from vt_models.models.registry import get_spec
    from vt_models.train.optim import build_optimizer
    from vt_models.train.runtime import amp_dtype, cpu_has_bf16_units, dtype_name, resolve_device

    tc = cfg.train
    data = load_split_data(cfg.frames_dir(tc.dataset), cfg.splits_path(tc.dataset))
    device = resolve_device(tc.device)
    amp_modes = ["off", "auto"] if device.type == "cuda" or cpu_has_bf16_units() else ["off"]
    rows = []

    def timed(n: int, step: Callable[[], Any]) -> float:
        step()  # warm-up (allocations, cudnn autotune)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for name in backbones:
        model, transforms = build_backbone(name, "none", len(data.classes), dropout=tc.dropout, crop_size=tc.crop_size)
        clip_len = transforms.clip_len or max(tc.clip_len, get_spec(name).min_frames)
        train_loader, _ = make_loaders(data, tc, transforms, clip_len, cfg.seed)
        n = min(batches, len(train_loader))
        bs = tc.batch_size

        it = _forever(train_loader)
        loader_s = timed(n, lambda: next(it))
        it.close()  # stop its worker processes: they must not compete with the model-only timing

        model = model.to(device).train()
        task = ClassificationTask(len(data.classes))
        for amp in amp_modes:
            dtype = amp_dtype(tc.model_copy(update={"amp": amp}), device)
            opt = build_optimizer(model, tc)
            x = torch.randn(bs, 3, clip_len, transforms.train.crop_size, transforms.train.crop_size)
            y = torch.randint(0, len(data.classes), (bs,))

            def step(batch: Any = None) -> None:
                ctx = torch.autocast(device.type, dtype=dtype) if dtype else _nullctx()
                opt.zero_grad(set_to_none=True)
                with ctx:
                    loss, _ = task.loss(model, batch or (x, y), device)
                loss.backward()
                opt.step()

            model_s = timed(n, step)
            wait = 0.0
            both_it = _forever(train_loader)
            step(next(both_it))
            t0 = time.perf_counter()
            for _ in range(n):
                t_wait = time.perf_counter()
                batch = next(both_it)
                wait += time.perf_counter() - t_wait
                step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            both_s = time.perf_counter() - t0
            both_it.close()
            row = {
                "backbone": name,
                "device": str(device),
                "amp": dtype_name(dtype),
                "batch": bs,
                "clip": f"{clip_len}x{transforms.train.crop_size}",
                "workers": tc.num_workers,
                "loader_clips_s": n * bs / loader_s,
                "model_clips_s": n * bs / model_s,
                "together_clips_s": n * bs / both_s,
                "data_wait_fraction": wait / both_s,
            }
            rows.append(row)
            echo(
                f"{name:<14} {row['device']:<6} {row['amp']:<8} batch {bs} clip {row['clip']:<7} "
                f"workers {tc.num_workers}: "
                f"loader {row['loader_clips_s']:7.1f} clips/s | model step {row['model_clips_s']:7.1f} clips/s | "
                f"together {row['together_clips_s']:7.1f} clips/s, data wait {100 * row['data_wait_fraction']:4.1f}%"
            )
    return rows


def _forever(loader: Any) -> Any:
    """Batches from ``loader`` without end (unlike itertools.cycle, nothing is kept in memory)."""
    while True:
        yield from loader


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
