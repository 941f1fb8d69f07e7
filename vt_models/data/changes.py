"""What changed in a raw video folder since the last recorded data version: one definition for all.

The record is a *state file*, ``<data_dir>/probe/<dataset>.raw_state.json``: ``{relative path: md5}``
of every video file (``probe.extensions``) in ``datasets.<dataset>.raw`` when a data version was last
completed. ``vt demo`` writes it at its end (after ``dvc repro``), the Prefect ``retrain`` flow reads
it to report what was added, changed and removed, and writes it again after a successful retrain.

The state file is tracked in **git**, next to ``dvc.lock``: it is small text that describes a data
version, so the commit that records a data version (the flow's own commit with ``flows.git_commit``)
also records which raw videos it was made from, and a fresh clone's first retrain reports the same
changes as the workspace that made the commit would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vt_models.config import Config
from vt_models.io.files import file_md5, write_json

Snapshot = dict[str, str]


def state_path(cfg: Config, dataset: str) -> Path:
    """``<data_dir>/probe/<dataset>.raw_state.json`` (git-tracked, not a DVC output)."""
    return cfg.probe_dir(dataset).parent / f"{dataset}.raw_state.json"


def raw_snapshot(raw: Path | str, extensions: list[str]) -> Snapshot:
    """``{relative posix path: md5}`` of every video file under ``raw`` (the files `vt probe` sees)."""
    from vt_models.data.probe import find_videos

    raw = Path(raw)
    if not raw.is_dir():
        return {}
    return {p.as_posix(): file_md5(raw / p) for p in find_videos(raw, extensions)}


def diff_snapshots(old: Snapshot, new: Snapshot) -> dict[str, list[str]]:
    return {
        "added": sorted(set(new) - set(old)),
        "changed": sorted(p for p in set(new) & set(old) if new[p] != old[p]),
        "removed": sorted(set(old) - set(new)),
    }


def read_state(path: Path | str) -> Snapshot:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(path: Path | str, snapshot: Snapshot) -> Path:
    """Sorted, one file per line: stable diffs in git."""
    return write_json(path, dict(sorted(snapshot.items())))


@dataclass
class RawChanges:
    """The raw folder of one data set now, against its last recorded state."""

    dataset: str
    raw: Path
    state_file: Path
    snapshot: Snapshot
    changes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.changes.values())

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.changes.items()}

    def record(self) -> Path:
        """Write this snapshot as the new recorded state (after the data version is complete)."""
        return write_state(self.state_file, self.snapshot)


def raw_changes(cfg: Config, dataset: str) -> RawChanges:
    """Snapshot ``datasets.<dataset>.raw`` and diff it against the state file."""
    raw = Path(cfg.dataset(dataset).raw)
    path = state_path(cfg, dataset)
    snapshot = raw_snapshot(raw, cfg.probe.extensions)
    return RawChanges(dataset, raw, path, snapshot, diff_snapshots(read_state(path), snapshot))


def record_raw_state(cfg: Config, dataset: str) -> RawChanges:
    """Record the raw folder as it is now (``vt demo`` does this once its data is in place)."""
    current = raw_changes(cfg, dataset)
    current.record()
    return current
