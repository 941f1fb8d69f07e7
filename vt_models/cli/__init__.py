"""The ``vt`` command line: thin wrappers that call one steps function per pipeline step and print.

Each command group lives in its own module; importing this package registers them all on ``app``.
"""

from vt_models.cli import classify, data, demo, detect, predict  # noqa: F401  (registers the commands)
from vt_models.cli.app import app, main
from vt_models.reports import format_motion_table, format_promotion, motion_summary, text_table

__all__ = ["app", "format_motion_table", "format_promotion", "main", "motion_summary", "text_table"]
