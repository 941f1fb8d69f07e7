"""Data access for the dashboard (one module per source): what MLflow and DVC recorded, as pandas DataFrames.

Nothing here computes a score: every number comes from an MLflow run, a registry version or a
DVC-tracked file of the project in the working directory, so the dashboard cannot disagree with
them. The ``load_*`` functions read and are cached (``st.cache_data``, keyed by the tracking URI so
switching stores never shows stale data); the rest are pure and testable without Streamlit.
"""

from dashboard.data.adapt import *  # noqa: F403
from dashboard.data.compare import *  # noqa: F403
from dashboard.data.detect import *  # noqa: F403
from dashboard.data.files import *  # noqa: F403
from dashboard.data.store import *  # noqa: F403
