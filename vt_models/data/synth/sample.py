"""The sample data set: one task per clip, rendered in parallel into folder-per-class MP4s with box sidecars."""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from vt_models.data.annotations import MOT_HEADER as BOXES_HEADER  # one definition of the columns
from vt_models.data.annotations import Box, read_mot_csv
from vt_models.data.synth.render import render_clip
from vt_models.data.synth.scene import make_scene
from vt_models.video.encode import write_video

if TYPE_CHECKING:
    from vt_models.config import Config

# --------------------------------------------------------------------------- boxes CSV


def write_boxes_csv(path: Path | str, boxes: list[Box]) -> None:
    """Write MOT-style boxes: header ``frame,track_id,x,y,w,h,label``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(BOXES_HEADER)
        for b in boxes:
            writer.writerow((b.frame, b.track_id, f"{b.x:.2f}", f"{b.y:.2f}", f"{b.w:.2f}", f"{b.h:.2f}", b.label))


def read_boxes_csv(path: Path | str) -> list[Box]:
    """Inverse of :func:`write_boxes_csv` (the strict reader of :mod:`vt_models.data.annotations`)."""
    return read_mot_csv(path)


# --------------------------------------------------------------------------- data set


def clip_name(cls: str, recording: int, clip: int, shared_scenes: bool = True) -> str:
    """File stem of clip ``clip`` of class ``cls`` filmed in scene ``recording`` (written to ``<cls>/``).

    The stem names the scene, not the class, so the probe's default group regex maps every clip filmed
    in one scene to one group, ``scene<NNN>``, whatever its class (UCF101's groups work the same way):
    a scene is then in one split only, and the test split's scenes are never seen in training.
    Without shared scenes recording r of each class has a scene of its own, and the stem
    (``<cls>_scene<NNN>``) names that scene, so each is its own group.
    """
    return f"scene{recording:03d}_c{clip:02d}" if shared_scenes else f"{cls}_scene{recording:03d}_c{clip:02d}"


def _generated_pattern(cls: str) -> re.Pattern[str]:
    """Files this module writes into ``<raw>/<cls>/`` (including interrupted temp files, and the
    ``<cls>_r<NNN>_c<NN>`` names of earlier versions)."""
    name = re.escape(cls)
    return re.compile(rf"^\.?({name}_scene\d+|scene\d+|{name}_r\d+)_c\d+(\.partial)?\.(mp4|boxes\.csv)$")


def _stable_hash(text: str) -> int:
    """Seed material from a name; unlike ``hash()`` it does not change between processes."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


_SCENE_TAG, _CLIP_TAG = 1, 2


@dataclass(frozen=True)
class _Task:
    path: Path
    cls: str
    style: str
    motion_scale: float
    scene_seed: tuple[int, ...]  # (_SCENE_TAG, seed, domain, scene id): no class in it
    clip_seed: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]
    fps: tuple[int, ...]
    duration_s: tuple[float, float]


def _scene_seed(seed: int, domain: str, scene_id: int, cls: str | None = None) -> tuple[int, ...]:
    """Seed of one scene of a domain's pool; the class is deliberately not part of it, unless the
    domain's scenes are not shared between classes (``cls`` given)."""
    if cls is None:
        return (_SCENE_TAG, seed, _stable_hash(domain), scene_id)
    return (_SCENE_TAG, seed, _stable_hash(domain), _stable_hash(cls), scene_id)


def _camera(task: _Task) -> tuple[np.random.Generator, int, int, int]:
    """(scene rng, width, height, fps): size and fps belong to the scene (one camera), so
    they are the first draws from the scene's seed; the rest of the stream is the scene's look."""
    scene_rng = np.random.default_rng(np.random.SeedSequence(task.scene_seed))
    width, height = task.sizes[int(scene_rng.integers(len(task.sizes)))]
    fps = task.fps[int(scene_rng.integers(len(task.fps)))]
    return scene_rng, width, height, fps


def _clip_spec(task: _Task) -> tuple[np.random.Generator, np.random.Generator, int, int, int, int]:
    """(scene rng, clip rng, width, height, fps, n_frames) of one task; the duration is per clip."""
    scene_rng, width, height, fps = _camera(task)
    rng = np.random.default_rng(np.random.SeedSequence(task.clip_seed))
    n_frames = max(1, round(rng.uniform(*task.duration_s) * fps))
    return scene_rng, rng, width, height, fps, n_frames


def _run_task(task: _Task) -> tuple[Path, int]:
    """Render and encode one clip (runs in a worker process); returns (path, n_frames)."""
    scene_rng, rng, width, height, fps, n_frames = _clip_spec(task)
    scene = make_scene(task.style, width, height, scene_rng)
    clip = render_clip(task.cls, task.style, width, height, fps, n_frames, rng, scene, task.motion_scale)
    # Write under temporary names, then rename: an interrupted run leaves no half file
    # under a final name (and the temp names match the clean-up pattern).
    stem = task.path.name.removesuffix(".mp4")
    tmp_video = task.path.with_name(f".{stem}.partial.mp4")
    tmp_boxes = task.path.with_name(f".{stem}.partial.boxes.csv")
    write_video(tmp_video, clip.frames, fps)  # repeatable x264 settings live in write_video
    write_boxes_csv(tmp_boxes, clip.boxes)
    os.replace(tmp_video, task.path)
    os.replace(tmp_boxes, task.path.with_name(f"{stem}.boxes.csv"))
    return task.path, n_frames


def _even(n: int) -> int:
    return max(8, n - n % 2)


def _plan(cfg: Config) -> tuple[list[_Task], dict[str, dict[str, int]]]:
    sample = cfg.sample
    seed = cfg.seed % 2**64
    sizes = tuple((_even(w), _even(h)) for w, h in sample.sizes)
    tasks: list[_Task] = []
    counts: dict[str, dict[str, int]] = {}
    for domain, dom in sample.domains.items():
        raw = Path(cfg.datasets[domain].raw)
        counts[domain] = {}
        for cls in sample.classes:
            base = (seed, _stable_hash(domain), _stable_hash(cls))
            for i in range(dom.clips_per_class):
                rec, k = divmod(i, dom.clips_per_recording)
                tasks.append(
                    _Task(
                        path=raw / cls / f"{clip_name(cls, rec, k, dom.shared_scenes)}.mp4",
                        cls=cls,
                        style=dom.style,
                        motion_scale=dom.motion_scale,
                        # Scene id = recording index: recording r of every class is filmed
                        # in scene r of this domain (see the module docstring), unless the
                        # domain's scenes are per class and recording.
                        scene_seed=_scene_seed(seed, domain, rec, None if dom.shared_scenes else cls),
                        clip_seed=(_CLIP_TAG, *base, rec, k),
                        sizes=sizes,
                        fps=tuple(sample.fps),
                        duration_s=tuple(sample.duration_s),  # type: ignore[arg-type]
                    )
                )
            counts[domain][cls] = dom.clips_per_class
    paths = [t.path for t in tasks]
    if len(set(paths)) != len(paths):
        from vt_models.config import ConfigError  # local: config imports this module lazily

        raise ConfigError(
            f"sample.domains {list(sample.domains)} share a raw folder; give each domain its own "
            "datasets.<domain>.raw so their clips do not overwrite each other"
        )
    return tasks, counts


def _clean(folder: Path, cls: str) -> None:
    """Remove what an earlier run generated for ``cls``; leave every other file alone."""
    if not folder.is_dir():
        return
    pattern = _generated_pattern(cls)
    for path in folder.iterdir():
        if path.is_file() and pattern.match(path.name):
            path.unlink()


def generate_sample(cfg: Config, progress: bool = True) -> dict[str, dict[str, int]]:
    """For every domain in cfg.sample.domains write cfg.datasets[domain].raw/<class>/<name>.mp4
    plus a sidecar <name>.boxes.csv; return {domain: {class: n_clips}}.

    Deterministic from ``cfg.seed``: a recording's scene (look and camera) comes from
    (seed, domain, recording index), the same for every class, and the rest of a clip's
    randomness from (seed, domain, class, recording, clip), so output is byte-identical
    across runs and worker counts.
    """
    tasks, counts = _plan(cfg)
    for domain in cfg.sample.domains:
        raw = Path(cfg.datasets[domain].raw)
        for cls in cfg.sample.classes:
            _clean(raw / cls, cls)
            (raw / cls).mkdir(parents=True, exist_ok=True)
    workers = min(cfg.sample.workers or os.cpu_count() or 1, max(1, len(tasks)))
    with tqdm(total=len(tasks), desc="sample", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                _run_task(task)
                bar.update()
        else:
            # fork: workers inherit the imported modules, no re-import cost per worker.
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            ctx = multiprocessing.get_context(method)
            pool = ProcessPoolExecutor(workers, mp_context=ctx)
            try:
                futures = {pool.submit(_run_task, task): task for task in tasks}
                for future in as_completed(futures):
                    try:
                        future.result()
                    except Exception as exc:
                        raise RuntimeError(f"sample: rendering {futures[future].path} failed: {exc}") from exc
                    bar.update()
            finally:
                # On error or Ctrl-C drop the queued clips instead of rendering them all first.
                pool.shutdown(wait=True, cancel_futures=True)
    return counts
