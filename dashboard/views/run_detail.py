"""Run detail: training curves, confusion matrix, per-class report, resolved config, data and lineage."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data as D
from dashboard import ui

ctx = ui.context()
st.title("Run detail")

runs = ui.runs_or_stop(ctx)

top = runs[runs["parent_run_id"].isna()] if "parent_run_id" in runs else runs
versions = D.load_versions(ctx.uri, ctx.model_name)
champion = D.alias_row(versions, "champion")


def label(run_id: str) -> str:
    r = top[top["run_id"] == run_id].iloc[0]
    mark = " (champion)" if champion and champion["run_id"] == run_id else ""
    when = r["start_time"].strftime("%Y-%m-%d %H:%M") if pd.notna(r["start_time"]) else "?"
    return f"{r.get('tags.backbone', '') or r['run_name']}{mark} · {r['run_name']} · {when} · {ui.short(run_id)}"


# Default: the champion's run when it is in this experiment, else the newest run.
ids = top["run_id"].tolist()
default = ids.index(champion["run_id"]) if champion and champion["run_id"] in ids else 0
run_id = st.selectbox("Run", ids, index=default, format_func=label, key="rd_run")
run = D.load_run(ctx.uri, run_id)
tags, metrics, params = run["tags"], run["metrics"], run["params"]
backbone = tags.get("backbone", run["run_name"])

st.subheader(f"`{backbone}`" + (" · champion" if champion and champion["run_id"] == run_id else ""))
cols = st.columns(4)
cols[0].metric("test accuracy", ui.fmt(metrics.get("test_accuracy")))
cols[1].metric("test macro F1", ui.fmt(metrics.get("test_macro_f1")))
cols[2].metric("best val macro F1", ui.fmt(metrics.get("best_val_macro_f1")))
cols[3].metric("epochs", ui.fmt(metrics.get("best_epochs_run"), "{:.0f}"))
st.caption(
    f"status {run['status']} · strategy `{tags.get('strategy', '-')}` · weights `{tags.get('weights_source', '-')}` · "
    f"device `{tags.get('device', '-')}` · run `{run_id}`"
)


def motion_section() -> None:
    """The evaluation's motion probes: does the model look at motion, or at the scenery?"""
    if "test_motion_static_accuracy" not in metrics:
        if "test_accuracy" in metrics:
            ui.hint(
                f"No motion probes in this run's evaluation: run `{D.CMD_EVALUATE} -b {backbone}` "
                "(params `evaluate.motion_probes: true`)."
            )
        return
    st.markdown("**Does it look at motion?** Test videos perturbed, one clip each")
    m = lambda key: ui.fmt(metrics.get(f"test_motion_{key}"))  # noqa: E731
    cols = st.columns(4)
    cols[0].metric(
        "static clips: accuracy",
        m("static_accuracy"),
        help="every frame the middle one, no motion: a model that reads motion falls to the majority-class rate",
    )
    cols[1].metric(
        "reversed clips: accuracy",
        m("reversed_accuracy"),
        help="against swapped labels (left <-> right, ...): high means the model reads the direction of motion",
    )
    cols[2].metric("changed under reversal", m("reversed_changed"), help="fraction of videos whose prediction changes")
    cols[3].metric("shuffled clips: accuracy", m("shuffled_accuracy"), help="frames in a random order")
    st.caption(
        f"test accuracy {ui.fmt(metrics.get('test_accuracy'))} · chance {m('chance')} · majority class {m('majority')}"
    )
    warning = tags.get("test_motion_warning", "none")
    if warning != "none":
        st.warning(f"**Probably reading scenery**: {warning}.", icon=":material/warning:")


motion_section()

curves, confusion, report, config, lineage = st.tabs(
    ["Training curves", "Confusion matrix", "Per-class report", "Config", "Data & lineage"]
)

with curves:
    hist = D.load_history(ctx.uri, run_id)
    if hist.empty:
        ui.hint("This run logged no per-epoch metrics (a run that failed before its first epoch?).")
    else:
        groups = {
            "loss": ["train_loss", "val_loss"],
            "validation": ["val_accuracy", "val_macro_f1"],
            "learning rate": ["lr"],
        }
        parts = st.columns(len(groups))
        for col, (title, keys) in zip(parts, groups.items(), strict=True):
            sub = hist[hist["metric"].isin(keys)]
            if sub.empty:
                continue
            col.markdown(f"**{title}**")
            chart = (
                alt.Chart(sub)
                .mark_line(point=True)
                .encode(
                    x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
                    y=alt.Y("value:Q", title=None),
                    color=alt.Color("metric:N", legend=alt.Legend(orient="bottom", title=None)),
                    tooltip=["metric", "epoch", alt.Tooltip("value:Q", format=".4f")],
                )
            )
            col.altair_chart(chart.properties(height=260), width="stretch")

evaluate_hint = f"No evaluation attached to this run: run `{D.CMD_EVALUATE} -b {backbone}`."
with confusion:
    cm = D.artifact_csv(ctx.uri, run_id, "evaluation/confusion_matrix.csv")
    if cm is None:
        ui.hint(evaluate_hint)
    else:
        long = cm.melt(id_vars="true", var_name="predicted", value_name="videos")
        order = cm["true"].tolist()
        base = alt.Chart(long).encode(x=alt.X("predicted:N", sort=order), y=alt.Y("true:N", sort=order))
        chart = base.mark_rect().encode(color=alt.Color("videos:Q", scale=alt.Scale(scheme="blues"))) + base.mark_text(
            fontSize=14
        ).encode(text="videos:Q")
        st.altair_chart(chart.properties(height=60 + 40 * len(order), title="test split, video level"), width="stretch")
        st.dataframe(cm, hide_index=True)

with report:
    per_class = D.artifact_csv(ctx.uri, run_id, "evaluation/per_class.csv")
    if per_class is None:
        ui.hint(evaluate_hint)
    else:
        st.dataframe(
            per_class,
            hide_index=True,
            column_config={
                k: st.column_config.ProgressColumn(k, min_value=0.0, max_value=1.0, format="%.3f")
                for k in ("precision", "recall", "f1")
            },
        )
        preds = D.artifact_csv(ctx.uri, run_id, "evaluation/predictions.csv")
        if preds is not None:
            wrong = preds[preds["true_label"] != preds["pred_label"]]
            with st.expander(f"Misclassified test videos ({len(wrong)} of {len(preds)})"):
                st.dataframe(wrong, hide_index=True)

with config:
    raw = D.load_artifact(ctx.uri, run_id, "config.json")
    if raw is not None:
        st.markdown("**Resolved training config** (`config.json` artifact)")
        st.json(json.loads(raw), expanded=True)
    else:
        ui.hint("This run has no `config.json` artifact.")
    with st.expander(f"All {len(params)} MLflow params"):
        st.dataframe(pd.DataFrame(sorted(params.items()), columns=["param", "value"]), hide_index=True)

with lineage:
    data_version = tags.get("data_version", "")
    st.markdown(
        f"**Dataset version:** `{data_version or 'not recorded'}`  \n"
        f"**Code:** git `{tags.get('git_commit', '?')}`"
        + (" (uncommitted changes)" if tags.get("git_dirty") == "true" else "")
    )
    if run["datasets"]:
        st.dataframe(pd.DataFrame(run["datasets"]), hide_index=True)
    if ctx.cfg is not None and data_version:
        from vt_models.io.dvc import data_version as current_version

        ds_name = tags.get("dataset") or ctx.cfg.train.dataset
        frames_dir, splits_path = ctx.cfg.frames_dir(ds_name), ctx.cfg.splits_path(ds_name)
        if (frames_dir / "index.json").is_file() and splits_path.is_file():
            now = current_version(frames_dir, splits_path)
            if now == data_version:
                st.success(
                    f"Trained on the data this project's DVC workspace holds now (`{ds_name}`).",
                    icon=":material/check_circle:",
                )
            else:
                st.warning(
                    f"Trained on `{data_version}`; the workspace's `{ds_name}` data is now `{now}`. "
                    "Re-run `dvc repro` to retrain on it.",
                    icon=":material/history:",
                )
    from_run = versions[versions["run_id"] == run_id] if not versions.empty else versions
    weights = params.get("weights_resolved") or tags.get("weights_source", "?")
    dataset = run["datasets"][0]["name"] if run["datasets"] else data_version

    def q(text: object) -> str:
        """Safe inside a quoted DOT label."""
        return str(text).replace("\\", "/").replace('"', "'")

    dot = [
        "digraph { rankdir=LR; node [shape=box, style=rounded, fontsize=11];",
        f'data [label="data set\\n{q(dataset)}"];',
        f'weights [label="initial weights\\n{q(weights)}"];',
        f'run [label="{q(ctx.experiment)} run\\n{q(backbone)} {ui.short(run_id)}", style="rounded,bold"];',
        "data -> run; weights -> run;",
    ]
    for _, v in from_run.iterrows():
        aliases = f"\\n@{v['aliases']}" if v["aliases"] else ""
        dot.append(f'v{v["version"]} [label="{ctx.model_name} v{v["version"]}{aliases}"]; run -> v{v["version"]};')
    dot.append("}")
    st.graphviz_chart("\n".join(dot))
    if from_run.empty:
        st.caption(
            f"No registered version of `{ctx.model_name}` comes from this run (`{D.CMD_PROMOTE}` registers one)."
        )
