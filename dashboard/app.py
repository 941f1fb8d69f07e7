"""Entry point: ``streamlit run dashboard/app.py`` from the project root (binds 127.0.0.1).

Which backbone should we ship, and why? Every page reads what MLflow (``MLFLOW_TRACKING_URI``, or the
embedded ``sqlite:///mlflow.db``) and the DVC-tracked files of the working directory recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ (not the project root) on sys.path; the pages
# import the `dashboard` package, so the folder above it must be importable too.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import os  # noqa: E402

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

# artifact downloads (evaluation files, models) would print progress bars into the server log
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

st.set_page_config(page_title="vt-models review", page_icon=":material/movie:", layout="wide")

PAGES = [
    st.Page("views/backbones.py", title="Backbones", icon=":material/leaderboard:", default=True),
    st.Page("views/run_detail.py", title="Run detail", icon=":material/query_stats:"),
    st.Page("views/registry.py", title="Registry", icon=":material/verified:"),
    st.Page("views/data.py", title="Data", icon=":material/video_library:"),
    st.Page("views/predict.py", title="Predict", icon=":material/online_prediction:"),
    st.Page("views/detectors.py", title="Detectors", icon=":material/center_focus_strong:"),
    st.Page("views/adaptation.py", title="Adaptation", icon=":material/swap_horiz:"),
]

page = st.navigation(PAGES)
ui.sidebar()
page.run()
