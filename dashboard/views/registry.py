"""Registry: every version with its aliases, and each promotion decision with its evidence."""

from __future__ import annotations

import math
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
# the project's own model first, whatever else the store holds (names sort alphabetically)
name = st.selectbox("Registered model", options, index=options.index(ctx.model_name), key="reg_model")
versions = D.load_versions(ctx.uri, name)
if versions.empty:
    st.warning(f"`{name}` has no registered version in `{D.shown_uri(ctx.uri)}`.")
    ui.hint(
        f"Run `{D.CMD_PROMOTE}` after `{D.CMD_TRAIN}` and `{D.CMD_EVALUATE}` (or `{D.CMD_DEMO}`): it registers "
        "the best validated backbone as `challenger` and makes it `champion` only if it clears the floor "
        "(its bootstrap CI over test videos above the majority-class baseline) and beats the current one."
    )
    st.stop()

champion, challenger = D.alias_row(versions, "champion"), D.alias_row(versions, "challenger")
cols = st.columns(3)
cols[0].metric("champion", f"v{champion['version']} · {champion['backbone']}" if champion else "none")
cols[1].metric("challenger", f"v{challenger['version']} · {challenger['backbone']}" if challenger else "none")
cols[2].metric("versions", len(versions))
blocked = None if champion is not None else D.nothing_to_ship(D.last_decision(versions))
if blocked:
    st.warning(f"**Nothing to ship yet**: {blocked.removeprefix(D.NOTHING_TO_SHIP + ': ')}", icon=":material/block:")
elif champion is None:
    ui.hint(f"No `champion` alias yet: run `{D.CMD_PROMOTE}`.")

st.subheader("Versions")
table = versions.rename(
    columns={
        "promotion.promoted": "promoted",
        "promotion.metric": "metric",
        "promotion.basis": "basis",  # labelled, or label_free: no labelled test split
        "promotion.candidate_score": "candidate score",
        "promotion.champion_score": "champion score",
        "promotion.champion_version": "vs champion",
        "promotion.data_version": "data version",
        "promotion.candidate_qualifies": "clears floor",
        "promotion.candidate_ci_low": "CI low",
        "promotion.candidate_ci_high": "CI high",
        "promotion.baseline": "baseline",
        "promotion.test_videos": "test videos",
    }
)
cols_shown = [
    c
    for c in [
        "version",
        "aliases",
        "backbone",
        "promoted",
        "metric",
        "basis",
        "candidate score",
        "clears floor",
        "CI low",
        "CI high",
        "baseline",
        "test videos",
        "champion score",
        "vs champion",
        "data version",
        "run_id",
        "created",
    ]
    if c in table
]
st.dataframe(table[cols_shown], hide_index=True, key="reg_versions")

st.subheader("Champion history")
history = D.load_alias_history(ctx.uri, name)
if history.empty:
    st.caption("No recorded move of `champion` yet (the gate and `vt promote --rollback` record each one).")
else:
    st.dataframe(history, hide_index=True, key="reg_history")
    st.caption(
        f"`{D.CMD_PROMOTE} --rollback --reason TEXT` (detectors: `vt detect promote --rollback`) moves `champion` "
        "back to the previous champion; each move is an `alias_move.*` tag on the versions it involves."
    )

st.subheader("Promotion decisions")
reasons = (
    versions["promotion.reason"].fillna("") if "promotion.reason" in versions else pd.Series("", index=versions.index)
)
decided = versions[reasons != ""]
if decided.empty:
    st.caption("No version carries `promotion.*` tags (registered outside `vt promote`).")


def score(value: object) -> float | None:
    """A tag's number; None when absent, empty or NaN (a version without that tag)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def yes(value: object) -> bool:
    return str(value).lower() == "true"


for i, (_, v) in enumerate(decided.iterrows()):
    promoted = yes(v.get("promotion.promoted", ""))
    fails_floor = str(v.get("promotion.candidate_qualifies", "")).lower() == "false"
    removed = yes(v.get("promotion.champion_removed", ""))
    label_free = v.get("promotion.basis") == D.LABEL_FREE  # no floor there: the candidate was collapsed
    if promoted:
        verdict = "promoted to champion"
    elif fails_floor:
        failed = "collapsed predictions" if label_free else "fails the floor"
        verdict = f"not promoted: {failed}" + (" · champion alias removed" if removed else "")
    else:
        verdict = "kept as challenger (champion unchanged)"
    with st.expander(
        f"v{v['version']} · {v['backbone']} · {verdict}",
        expanded=i == 0,
        icon=":material/check_circle:" if promoted else ":material/block:",
    ):
        said = f"{D.LABEL_FREE_DECISION}: " if label_free else ""
        st.markdown(f"**Reason:** {said}{v['promotion.reason']}")
        cand, champ = score(v.get("promotion.candidate_score")), score(v.get("promotion.champion_score"))
        margin = score(v.get("promotion.margin")) or 0.0
        metric = v.get("promotion.metric", "score")
        c = st.columns(3)
        diff = None if cand is None or champ is None else cand - champ
        c[0].metric(
            f"candidate {metric}",
            ui.fmt(cand, "{:.4f}"),
            delta=None if diff is None else f"{diff:+.4f} vs champion",
            delta_arrow="auto" if diff else "off",
            delta_color="normal" if diff else "off",
        )
        c[1].metric(
            f"champion {metric}",
            ui.fmt(champ, "{:.4f}"),
            help=f"champion v{v.get('promotion.champion_version') or '-'}, re-scored on the same split",
        )
        c[2].metric("margin", f"{margin:g}")
        low, high, base = (
            score(v.get(f"promotion.{k}")) for k in ("candidate_ci_low", "candidate_ci_high", "baseline")
        )
        videos = v.get("promotion.test_videos")
        if low is not None and high is not None and base is not None:  # decisions from before the floor have none
            conf = score(v.get("promotion.confidence")) or 0.95
            f = st.columns(4)
            f[0].metric(
                f"candidate {conf:.0%} CI",
                f"[{low:.3f}, {high:.3f}]",
                help=f"bootstrap over the test videos ({v.get('promotion.bootstrap_resamples', '-')} resamples)",
            )
            f[1].metric(f"baseline {metric}", ui.fmt(base, "{:.4f}"), help=str(v.get("promotion.baseline_rule", "")))
            f[2].metric("minimum", ui.fmt(score(v.get("promotion.min_score")), "{:g}"))
            f[3].metric("test videos", str(videos))
            if yes(v.get("promotion.small_test_set", "")):
                st.caption(
                    f"Small test set ({videos} videos, fewer than registry.min_test_videos = "
                    f"{v.get('promotion.min_test_videos', '-')}): scores move in steps of 1/{videos}."
                )
        if cand is not None:
            rows = [{"model": f"candidate v{v['version']}", "score": cand, "low": low, "high": high}]
            if champ is not None:
                rows.append(
                    {
                        "model": f"champion v{v.get('promotion.champion_version')}",
                        "score": champ,
                        "low": score(v.get("promotion.champion_ci_low")),
                        "high": score(v.get("promotion.champion_ci_high")),
                    }
                )
            bars = pd.DataFrame(rows)
            chart = (
                alt.Chart(bars)
                .mark_bar()
                .encode(
                    x=alt.X("score:Q", title=metric, scale=alt.Scale(domain=[0, 1])), y=alt.Y("model:N", title=None)
                )
            )
            layers = chart + alt.Chart(bars.dropna(subset=["low", "high"])).mark_rule(strokeWidth=2).encode(
                x="low:Q", x2="high:Q", y="model:N"
            )
            lines = []
            if base is not None:
                lines.append({"x": base, "line": "baseline"})
            if champ is not None:
                lines.append({"x": champ + margin, "line": "champion + margin"})
            if lines:
                layers += (
                    alt.Chart(pd.DataFrame(lines))
                    .mark_rule(strokeDash=[4, 3])
                    .encode(
                        x="x:Q",
                        color=alt.Color(
                            "line:N",
                            title=None,
                            scale=alt.Scale(domain=["baseline", "champion + margin"], range=["#888888", "#e45756"]),
                        ),
                    )
                )
            st.altair_chart(layers.properties(height=alt.Step(32)), width="stretch")
            st.caption(
                "bars: the scores on the same test split; whiskers: their bootstrap CIs. The CI's lower end must "
                "pass the grey baseline to qualify; a qualifying candidate must pass the red line "
                "to replace the champion."
            )
        st.caption(
            f"data version `{v.get('promotion.data_version', '-')}` · candidate run "
            f"`{v.get('promotion.candidate_run_id', '-')}` · model source `{v['source']}`"
        )

# The DVC side of the last decision (reports/promotion.json) must match the registry's tags.
report = D.read_json(Path("reports") / "promotion.json")
if report is not None and report.get("model_name") == name:
    tagged = versions[versions["version"].astype(str) == str(report.get("candidate_version"))]
    agrees = not tagged.empty and str(tagged.iloc[0].get("promotion.reason", "")) == report.get("reason")
    st.caption(
        f"`reports/promotion.json` (DVC) records the last decision: v{report.get('candidate_version')} "
        f"({report.get('candidate_backbone')}) - "
        + (
            "matches the registry tags."
            if agrees
            else "differs from this store's tags (another store or an older run)."
        )
    )
