"""The adaptation report from its DVC-tracked files (``reports/adaptation/``): the rows and their summary.

``vt report adaptation`` (DVC stage ``adaptation``) writes them; nothing here scores anything again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard.data.files import read_csv, read_json

ADAPTATION_DIR = Path("reports") / "adaptation"
CMD_ADAPTATION = "vt report adaptation"
CMD_DEMO_ADAPTATION = "python3 tasks.py demo --adaptation"
# the rows' numeric columns (adaptation.csv), in display order; a report without one shows it empty
ADAPTATION_COLUMNS = (
    "test_macro_f1",
    "ci_low",
    "ci_high",
    "test_accuracy",
    "target_im",
    "target_snd",
    "target_dev",
    "test_videos",
    "epochs",
)
# what of the target's labels a row's training saw (the report's `target_labels`), in words
LABELS_SEEN = {"none": "none (the source model as it is)", "hidden": "hidden (adapted)", "train": "read (fine-tuned)"}


@dataclass(frozen=True)
class AdaptationReport:
    """``adaptation.csv`` as a table, ``metrics.json`` (the summary) and the heading of ``adaptation.md``."""

    rows: pd.DataFrame
    summary: dict[str, Any]
    heading: str


def read_adaptation(folder: Path = ADAPTATION_DIR) -> AdaptationReport | None:
    """The report in ``folder``; None when its table or summary is missing or unreadable."""
    rows, summary = read_csv(folder / "adaptation.csv"), read_json(folder / "metrics.json")
    if rows is None or summary is None or rows.empty or not {"setting", "target_labels"} <= set(rows):
        return None
    table = rows.copy()
    for column in ("seed", *ADAPTATION_COLUMNS):  # seed: empty for source-only, and in reports before seeds
        table[column] = pd.to_numeric(table[column], errors="coerce") if column in table else float("nan")
    try:
        first = (folder / "adaptation.md").read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        first = ""
    return AdaptationReport(table, summary, first.lstrip("# ").strip())


def adaptation_marks(report: AdaptationReport) -> dict[str, str]:
    """setting -> what the summary says of it: the best method with the target's labels hidden, and the
    methods the label-free scores pick (IM's is the report's choice; DEV's is recorded beside it)."""
    s = report.summary
    marks: dict[str, list[str]] = {}
    for key, text in (("best_method", "best hidden-label"), ("im_pick", "IM's pick"), ("dev_pick", "DEV's pick")):
        if s.get(key):
            marks.setdefault(str(s[key]), []).append(text)
    return {setting: ", ".join(texts) for setting, texts in marks.items()}


def interval_text(summary: dict[str, Any], name: str) -> str:
    """`` [low, high]``, the summary's paired interval of ``name`` (e.g. ``gap``) in a report of one seed, or
    ``, low to high over the seeds``, its range in a report of several; empty when the report has neither
    (reports written before the intervals were added)."""
    for low_key, high_key, text in (
        ("_ci_low", "_ci_high", " [{:+.3f}, {:+.3f}]"),
        ("_min", "_max", ", {:+.3f} to {:+.3f} over the seeds"),
    ):
        low, high = summary.get(name + low_key), summary.get(name + high_key)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            return text.format(low, high)
    return ""
