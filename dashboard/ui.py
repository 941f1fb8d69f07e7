"""Shared page furniture: the sidebar (store, project, experiment, refresh) and empty-state hints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data as D

CTX_KEY = "_vt_context"


@dataclass(frozen=True)
class Context:
    """What every page needs: the tracking URI, the project's config and the chosen experiment."""

    uri: str
    cfg: Any
    cfg_error: str | None
    experiment: str

    @property
    def model_name(self) -> str:
        return D.model_name(self.cfg)


def sidebar() -> Context:
    """Render the sidebar once per run (from app.py, so its widgets keep state across pages)."""
    uri = D.tracking_uri()
    cfg, cfg_error = D.load_project()
    experiments = D.load_experiments(uri)
    options = experiments if D.TRAIN_EXPERIMENT in experiments else [D.TRAIN_EXPERIMENT, *experiments]
    with st.sidebar:
        experiment = st.selectbox(
            "Experiment",
            options,
            index=options.index(D.TRAIN_EXPERIMENT),
            key="experiment",
            help="MLflow experiment whose runs the Backbones and Run detail pages compare",
        )
        st.caption(f"MLflow store: `{D.shown_uri(uri)}`  \nProject: `{Path.cwd()}`")
        if st.button("Refresh", help=f"MLflow reads are cached for {D.TTL_S} s; this re-reads now"):
            st.cache_data.clear()
            st.rerun()
    ctx = Context(uri, cfg, cfg_error, experiment or D.TRAIN_EXPERIMENT)
    st.session_state[CTX_KEY] = ctx
    return ctx


def context() -> Context:
    ctx = st.session_state.get(CTX_KEY)
    return ctx if isinstance(ctx, Context) else sidebar()


def hint(text: str) -> None:
    """A gap in the records and the command that fills it."""
    st.info(text, icon=":material/terminal:")


def empty_store(ctx: Context) -> None:
    """The no-runs state: say where we looked and exactly what to run."""
    st.warning(
        f"No runs in experiment `{ctx.experiment}` of the MLflow store `{D.shown_uri(ctx.uri)}` yet.\n\n"
        f"Run `{D.CMD_DEMO}` from the project root: it runs the whole pipeline (sample data, probe, extract, "
        f"split, pretrain, train) and fills this store. Then `{D.CMD_EVALUATE}` (test-split scores and cost), "
        f"`{D.CMD_CV}` (cross-validation) and `{D.CMD_PROMOTE}` (registry champion) complete the comparison.\n\n"
        "Using a team server? Start the dashboard with `MLFLOW_TRACKING_URI` set to it.",
        icon=":material/inbox:",
    )


def runs_or_stop(ctx: Context) -> pd.DataFrame:
    """The chosen experiment's runs; with none, the empty state (what to run) and stop the page."""
    runs = D.load_runs(ctx.uri, ctx.experiment)
    if runs.empty:
        empty_store(ctx)
        st.stop()
    return runs


def project_or_stop(ctx: Context) -> Any:
    """The project's config; pages that read DVC files stop with the reason when there is none."""
    if ctx.cfg is None:
        st.error(f"Cannot read the project's params: {ctx.cfg_error}")
        st.stop()
    return ctx.cfg


def fmt(value: Any, spec: str = "{:.3f}") -> str:
    try:
        return "-" if value is None or pd.isna(value) else spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def short(run_id: str) -> str:
    return run_id[:8] if run_id else "-"
