"""Backbones: one row per backbone of the chosen experiment, the charts, and the champion."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data as D
from dashboard import ui

ctx = ui.context()
st.title("Which backbone should we ship?")

runs = ui.runs_or_stop(ctx)

versions = D.load_versions(ctx.uri, ctx.model_name)
champion = D.alias_row(versions, "champion")
challenger = D.alias_row(versions, "challenger")
blocked = None if champion is not None else D.nothing_to_ship(D.last_decision(versions))
default_metric = ctx.cfg.registry.metric if ctx.cfg is not None and ctx.cfg.registry.metric in D.QUALITY else "macro_f1"
metric = st.columns([1, 3])[0].selectbox(
    "Metric for the bars and the CV column",
    D.QUALITY,
    index=D.QUALITY.index(default_metric),
    format_func=D.LABELS.get,
    key="bb_metric",
)

preferred = D.dvc_run_ids(ctx.cfg) if ctx.experiment == D.TRAIN_EXPERIMENT else {}
cv = D.cv_summary(D.load_runs(ctx.uri, D.CV_EXPERIMENT))
table = D.backbone_table(runs, cv, metric, champion["run_id"] if champion else None, preferred)
if table.empty:
    st.warning(f"Experiment `{ctx.experiment}` has runs but none tagged with a backbone.")
    ui.empty_store(ctx)
    st.stop()


# --------------------------------------------------------------------------- the answer


def verdict() -> None:
    """The ship decision as the registry recorded it, with the evidence next to it."""
    if blocked:
        st.warning(
            f"**Nothing to ship yet**: {blocked.removeprefix(D.NOTHING_TO_SHIP + ': ')}. `{ctx.model_name}` has "
            "no champion: no model cleared the promotion gate's floor on the test split.",
            icon=":material/block:",
        )
        return
    if champion is None:
        ui.hint(
            f"No champion in `{ctx.model_name}` yet: run `{D.CMD_PROMOTE}` to register the best validated "
            "backbone and gate it on the test split."
        )
        return
    row = table[table["champion"]]
    st.success(
        f"**Ship `{champion['backbone']}`**: `models:/{ctx.model_name}@champion` is version {champion['version']}. "
        f"Promotion gate: {champion.get('promotion.reason') or 'no decision recorded'}.",
        icon=":material/trophy:",
    )
    if row.empty:
        st.caption(
            f"The champion's run `{ui.short(champion['run_id'])}` is not the current run of its backbone in "
            f"`{ctx.experiment}` (retrained since, or another experiment); its row is not highlighted."
        )
        return
    r = row.iloc[0]
    cols = st.columns(5)
    cols[0].metric(f"test {D.LABELS[metric]}", ui.fmt(r[metric]))
    cols[1].metric(
        f"CV {D.LABELS[metric]}",
        ui.fmt(r["cv_mean"]),
        None if pd.isna(r["cv_std"]) else f"± {r['cv_std']:.3f} std",
        delta_color="off",
        delta_arrow="off",
    )
    cols[2].metric("latency / clip", ui.fmt(r["latency_ms"], "{:.1f} ms"))
    cols[3].metric("GFLOPs / clip", ui.fmt(r["gflops"], "{:.2f}"))
    cols[4].metric("params", ui.fmt(r["params_m"], "{:.1f} M"))
    best = table.dropna(subset=[metric]).sort_values(metric, ascending=False)
    if not best.empty and best.iloc[0]["backbone"] != r["backbone"]:
        st.caption(
            f"Highest test {D.LABELS[metric]} in this table: `{best.iloc[0]['backbone']}` "
            f"({best.iloc[0][metric]:.3f}). The gate chooses the candidate on validation, not test, and "
            f"moves the champion only when it wins by the margin."
        )


verdict()
for gap in D.missing_steps(table, cv, champion, blocked):
    ui.hint(gap)


# --------------------------------------------------------------------------- the table


def registry_mark(run_id: str) -> str:
    if champion and run_id == champion["run_id"]:
        return "champion"
    if challenger and run_id == challenger["run_id"]:
        return "challenger"
    return ""


shown = table.assign(registry=table["run_id"].map(registry_mark))
shown = shown[
    [
        "registry",
        "backbone",
        "family",
        *D.QUALITY,
        "cv",
        "params_m",
        "gflops",
        "latency_ms",
        "train_s",
        "data_version",
        "run_id",
    ]
]


def highlight(row: pd.Series) -> list[str]:
    style = "background-color: rgba(255, 196, 0, 0.25); font-weight: 600" if row["registry"] == "champion" else ""
    return [style] * len(row)


st.subheader(f"Backbones in `{ctx.experiment}`")
num = st.column_config.NumberColumn
st.dataframe(
    shown.style.apply(highlight, axis=1),
    hide_index=True,
    key="bb_table",
    column_config={
        "registry": "registry",
        "backbone": "backbone",
        "family": "family",
        **{m: num(f"test {D.LABELS[m]}", format="%.3f") for m in D.QUALITY},
        "cv": st.column_config.TextColumn(f"CV {D.LABELS[metric]} (mean ± std)"),
        "params_m": num("params (M)", format="%.2f"),
        "gflops": num("GFLOPs / clip", format="%.3f"),
        "latency_ms": num("latency (ms)", format="%.1f"),
        "train_s": num("training (s)", format="%.0f"),
        "data_version": "data version",
        "run_id": "MLflow run",
    },
)
st.caption(
    "Test scores: `vt evaluate` on the held-out split (video level); CV: `vt cv` over train+val folds; "
    "latency: median per clip at batch 1 on the evaluating device."
)


# --------------------------------------------------------------------------- charts


def metric_bars(df: pd.DataFrame) -> alt.Chart:
    """Test score and CV mean per backbone, side by side; the CV bar carries +/- 1 std."""
    long = pd.concat(
        [
            df.assign(kind="test split", value=df[metric], lo=float("nan"), hi=float("nan")),
            df.assign(
                kind="CV mean ± std",
                value=df["cv_mean"],
                lo=df["cv_mean"] - df["cv_std"],
                hi=df["cv_mean"] + df["cv_std"],
            ),
        ]
    )[["backbone", "kind", "value", "lo", "hi"]].dropna(subset=["value"])
    base = alt.Chart(long).encode(x=alt.X("backbone:N", title=None, axis=alt.Axis(labelAngle=0)), xOffset="kind:N")
    bars = base.mark_bar().encode(
        y=alt.Y("value:Q", title=D.LABELS[metric], scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("kind:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["backbone", "kind", alt.Tooltip("value:Q", format=".3f")],
    )
    errors = base.mark_errorbar(ticks=True, color="black").encode(y=alt.Y("lo:Q", title=D.LABELS[metric]), y2="hi:Q")
    return (bars + errors.transform_filter("isValid(datum.lo)")).properties(height=320)


FRONT = "Pareto frontier"


def pareto(df: pd.DataFrame, y: str) -> alt.Chart:
    """Quality against latency; the frontier (nothing both faster and better) is joined by a line."""
    pts = df.dropna(subset=[y, "latency_ms"]).copy()
    pts["frontier"] = [FRONT if f else "dominated" for f in D.pareto_mask(pts["latency_ms"], pts[y])]
    pts["label"] = pts["backbone"] + pts["champion"].map({True: " (champion)", False: ""})
    # explicit domains with head room, so the labels above the points are never clipped
    lo, hi = float(pts[y].min()), float(pts[y].max())
    base = alt.Chart(pts).encode(
        x=alt.X(
            "latency_ms:Q",
            title="latency per clip (ms)",
            scale=alt.Scale(domain=[0, 1.2 * float(pts["latency_ms"].max())], nice=False),
        ),
        y=alt.Y(
            f"{y}:Q", title=f"test {D.LABELS[y]}", scale=alt.Scale(domain=[max(0.0, lo - 0.05), hi + 0.08], nice=False)
        ),
    )
    line = (
        base.transform_filter(alt.datum.frontier == FRONT)
        .mark_line(strokeDash=[4, 3], color="#e45756")
        .encode(order="latency_ms:Q")
    )
    dots = base.mark_circle(size=140).encode(
        color=alt.Color(
            "frontier:N",
            title=None,
            scale=alt.Scale(domain=[FRONT, "dominated"], range=["#e45756", "#9e9e9e"]),
            legend=alt.Legend(orient="bottom"),
        ),
        tooltip=[
            "backbone",
            alt.Tooltip(f"{y}:Q", format=".3f"),
            alt.Tooltip("latency_ms:Q", format=".1f"),
            alt.Tooltip("gflops:Q", format=".3f"),
        ],
    )
    text = base.mark_text(dy=-12).encode(text="label:N")
    return (line + dots + text).properties(height=320)


def heatmap(df: pd.DataFrame) -> alt.Chart:
    base = alt.Chart(df).encode(
        x=alt.X("class:N", title=None, axis=alt.Axis(labelAngle=0, orient="top")), y=alt.Y("backbone:N", title=None)
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            "f1:Q", title="F1", scale=alt.Scale(domain=[0, 1], scheme="blues"), legend=alt.Legend(gradientLength=70)
        ),
        tooltip=["backbone", "class", alt.Tooltip("f1:Q", format=".3f")],
    )
    text = base.mark_text().encode(
        text=alt.Text("f1:Q", format=".2f"),
        color=alt.condition("datum.f1 > 0.6", alt.value("white"), alt.value("black")),
    )
    return (rect + text).properties(height=alt.Step(44))


left, right = st.columns(2)
with left:
    st.subheader(f"{D.LABELS[metric]}: test and cross-validation")
    if table[metric].notna().any() or table["cv_mean"].notna().any():
        st.altair_chart(metric_bars(table), width="stretch")
    else:
        ui.hint(f"Nothing to chart yet: run `{D.CMD_EVALUATE}` and `{D.CMD_CV}`.")
with right:
    st.subheader("Quality against latency")
    y = st.selectbox("Pareto metric", D.QUALITY, index=0, format_func=D.LABELS.get, key="bb_pareto_metric")
    if table[[y, "latency_ms"]].notna().all(axis=1).any():
        st.altair_chart(pareto(table, y), width="stretch")
    else:
        ui.hint(f"No test scores with latency yet: run `{D.CMD_EVALUATE}` (params `evaluate.measure_cost: true`).")

st.subheader("Per-class F1 on the test split")
f1 = D.per_class_f1(runs, preferred)
if f1.empty:
    ui.hint(f"No per-class scores yet: run `{D.CMD_EVALUATE}`.")
else:
    st.altair_chart(heatmap(f1), width="stretch")
