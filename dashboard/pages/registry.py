"""Registry: every version with its aliases, and each promotion decision with its evidence."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data as D
from dashboard import ui

ctx = ui.context()
st.title("Model registry")

names = D.load_registered_models(ctx.uri)
options = names if ctx.model_name in names else [ctx.model_name, *names]
name = st.selectbox("Registered model", options, key="reg_model")
versions = D.load_versions(ctx.uri, name)
if versions.empty:
    st.warning(f"`{name}` has no registered version in `{ctx.uri}`.")
    ui.hint(f"Run `{D.CMD_PROMOTE}` after `{D.CMD_TRAIN}` and `{D.CMD_EVALUATE}` (or `{D.CMD_DEMO}`): it registers "
            "the best validated backbone as `challenger` and makes it `champion` only if it beats the current one.")
    st.stop()

champion, challenger = D.alias_row(versions, "champion"), D.alias_row(versions, "challenger")
cols = st.columns(3)
cols[0].metric("champion", f"v{champion['version']} · {champion['backbone']}" if champion else "none")
cols[1].metric("challenger", f"v{challenger['version']} · {challenger['backbone']}" if challenger else "none")
cols[2].metric("versions", len(versions))
if champion is None:
    ui.hint(f"No `champion` alias yet: run `{D.CMD_PROMOTE}`.")

st.subheader("Versions")
table = versions.rename(columns={"promotion.promoted": "promoted", "promotion.metric": "metric",
                                 "promotion.candidate_score": "candidate score", "promotion.champion_score": "champion score",
                                 "promotion.champion_version": "vs champion", "promotion.data_version": "data version"})
cols_shown = [c for c in ["version", "aliases", "backbone", "promoted", "metric", "candidate score", "champion score",
                          "vs champion", "data version", "run_id", "created"] if c in table]
st.dataframe(table[cols_shown], hide_index=True, key="reg_versions")

st.subheader("Promotion decisions")
reasons = versions["promotion.reason"].fillna("") if "promotion.reason" in versions else pd.Series("", index=versions.index)
decided = versions[reasons != ""]
if decided.empty:
    st.caption("No version carries `promotion.*` tags (registered outside `vt promote`).")


def score(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


for i, (_, v) in enumerate(decided.iterrows()):
    promoted = str(v.get("promotion.promoted", "")).lower() == "true"
    verdict = "promoted to champion" if promoted else "kept as challenger (champion unchanged)"
    with st.expander(f"v{v['version']} · {v['backbone']} · {verdict}", expanded=i == 0,
                     icon=":material/check_circle:" if promoted else ":material/block:"):
        st.markdown(f"**Reason:** {v['promotion.reason']}")
        cand, champ = score(v.get("promotion.candidate_score")), score(v.get("promotion.champion_score"))
        margin = score(v.get("promotion.margin")) or 0.0
        metric = v.get("promotion.metric", "score")
        c = st.columns(3)
        diff = None if cand is None or champ is None else cand - champ
        c[0].metric(f"candidate {metric}", ui.fmt(cand, "{:.4f}"),
                    delta=None if diff is None else f"{diff:+.4f} vs champion", delta_arrow="auto" if diff else "off",
                    delta_color="normal" if diff else "off")
        c[1].metric(f"champion {metric}", ui.fmt(champ, "{:.4f}"),
                    help=f"champion v{v.get('promotion.champion_version') or '-'}, re-scored on the same split")
        c[2].metric("margin", f"{margin:g}")
        if cand is not None and champ is not None:
            bars = pd.DataFrame({"model": [f"candidate v{v['version']}", f"champion v{v.get('promotion.champion_version')}"],
                                 "score": [cand, champ]})
            chart = alt.Chart(bars).mark_bar().encode(x=alt.X("score:Q", title=metric, scale=alt.Scale(domain=[0, 1])),
                                                      y=alt.Y("model:N", title=None))
            rule = alt.Chart(pd.DataFrame({"x": [champ + margin]})).mark_rule(color="#e45756", strokeDash=[4, 3]).encode(x="x:Q")
            st.altair_chart((chart + rule).properties(height=alt.Step(32)), width="stretch")
            st.caption("bars: both models scored on the same split; dashed line: champion + margin, the score to beat")
        st.caption(f"data version `{v.get('promotion.data_version', '-')}` · candidate run "
                   f"`{v.get('promotion.candidate_run_id', '-')}` · model source `{v['source']}`")

# The DVC side of the last decision (reports/promotion.json) must match the registry's tags.
report = D.read_json(Path("reports") / "promotion.json")
if report is not None and report.get("model_name") == name:
    tagged = versions[versions["version"].astype(str) == str(report.get("candidate_version"))]
    agrees = not tagged.empty and str(tagged.iloc[0].get("promotion.reason", "")) == report.get("reason")
    st.caption(f"`reports/promotion.json` (DVC) records the last decision: v{report.get('candidate_version')} "
               f"({report.get('candidate_backbone')}) - " + ("matches the registry tags." if agrees else
                                                              "differs from this store's tags (another store or an older run)."))
