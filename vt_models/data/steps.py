"""The data steps of a labelled data set (``datasets.<name>``), as the CLI, the DVC stages and the
Prefect flows call them: probe -> extract -> split. Detection has its own (boxes) in
:mod:`vt_models.detect.steps`."""

from __future__ import annotations

from typing import Any

from vt_models.config import Config
from vt_models.data.extract import ExtractSummary, extract_dataset, load_index
from vt_models.data.probe import ProbeSummary, probe_dataset
from vt_models.data.split import split_dataset


def probe(cfg: Config, dataset: str, progress: bool = True, mapper: Any = None) -> ProbeSummary:
    """Check every video of ``dataset``: usable ones go to its manifest, the rest to quarantine."""
    ds = cfg.dataset(dataset)
    return probe_dataset(
        ds.raw, cfg.probe_dir(dataset), cfg.probe, ds.labels_csv, progress=progress, mapper=mapper, labelled=ds.labelled
    )


def extract(cfg: Config, dataset: str, progress: bool = True, mapper: Any = None) -> ExtractSummary:
    """Frames (and flow) of every usable video of ``dataset``; only new or changed videos are decoded."""
    return extract_dataset(
        cfg.probe_dir(dataset) / "manifest.csv",
        cfg.dataset(dataset).raw,
        cfg.frames_dir(dataset),
        cfg.extract,
        progress=progress,
        mapper=mapper,
    )


def split(cfg: Config, dataset: str, redraw: bool = False) -> dict[str, Any]:
    """Grouped, stratified, stable splits and folds of ``dataset``'s extracted videos."""
    return split_dataset(
        load_index(cfg.frames_dir(dataset)), cfg.splits_path(dataset), cfg.split.of(dataset), cfg.seed, redraw
    )
