"""Adaptation: what unsupervised domain adaptation buys on the target, read from ``vt report adaptation``'s files."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import data as D
from dashboard import ui

ctx = ui.context()
st.title("Does adaptation help on the target?")
cfg = ui.project_or_stop(ctx)
confidence = f"{cfg.registry.confidence:.0%}"

report = D.read_adaptation()
if report is None:
    ui.hint(
        f"No adaptation report yet (`{D.ADAPTATION_DIR}/`): run `{D.CMD_ADAPTATION}` from the project root after "
        f"the demo, or `{D.CMD_DEMO_ADAPTATION}`, which runs it with the data stages it needs. It compares, on the "
        "target's test split, the source model as it is, each adaptation method with the target's labels hidden, "
        "and fine-tuning on the target's labels (the ceiling)."
    )
    st.stop()

s = report.summary
if report.heading:
    st.caption(f"{report.heading}, from `{D.ADAPTATION_DIR}/` (DVC stage `adaptation`)")


# --------------------------------------------------------------------------- the answer

gap_text = f"{ui.fmt(s.get('gap'))}{D.interval_text(s, 'gap')}"
closed = s.get("gap_closed")
best = s.get("best_method")
seeds = int(s.get("seeds") or 1)
# several seeds: the summary is that of the settings' means, each share and difference with its range
over = f"Over {seeds} seeds (means): " if seeds > 1 else ""
by_seed = ""
if (
    seeds > 1
    and isinstance(s.get("gap_closed_min"), (int, float))
    and isinstance(s.get("gap_closed_max"), (int, float))
):
    by_seed = f" ({s['gap_closed_min']:.0%} to {s['gap_closed_max']:.0%} by seed)"
if best and isinstance(closed, (int, float)):
    answer = (
        f"{over}**`{best}` closes {closed:.0%} of the gap**{by_seed} with the target's labels hidden: test macro-F1 "
        f"{ui.fmt(s.get('best_method_macro_f1'))} against {ui.fmt(s.get('source_only_macro_f1'))} for the source model "
        f"as it is and {ui.fmt(s.get('supervised_macro_f1'))} fine-tuned on the target's labels (gap {gap_text})."
    )
    (st.success if closed >= 0.5 else st.warning)(answer, icon=":material/swap_horiz:")
else:
    st.warning(
        f"No gap to close: fine-tuning on the target's labels scored {ui.fmt(s.get('supervised_macro_f1'))} against "
        f"{ui.fmt(s.get('source_only_macro_f1'))} for the source model (gap {gap_text}).",
        icon=":material/swap_horiz:",
    )
picks = [
    f"IM, the label-free score that picks, chooses `{s['im_pick']}` ({ui.fmt(s.get('im_pick_macro_f1'))}, "
    f"{ui.fmt(s.get('im_pick_shortfall'))} below the best)"
    if s.get("im_pick")
    else "",
    f"DEV would choose `{s['dev_pick']}` ({ui.fmt(s.get('dev_pick_shortfall'))} below the best)"
    if s.get("dev_pick")
    else "",
]
if s.get("im_picks"):
    picks.append(
        f"by seed IM chose {', '.join(f'`{m}`' for m in str(s['im_picks']).split(','))}, within 0.05 of that "
        f"seed's best at {s.get('im_pick_good', '?')} of {seeds}"
    )
if any(picks):
    st.markdown(
        "Without the target's labels: " + "; ".join(p for p in picks if p) + f", from the label-free scores of "
        f"{s.get('label_free_videos', '?')} target videos outside the test split."
    )
if "autoencoder_gain" in s:
    st.markdown(
        f"Autoencoder pretraining on unlabelled video, then fine-tuning: {ui.fmt(s.get('autoencoder_macro_f1'))} "
        f"against {ui.fmt(s.get('scratch_macro_f1'))} from random weights, a gain of "
        f"{ui.fmt(s.get('autoencoder_gain'), '{:+.3f}')}{D.interval_text(s, 'autoencoder_gain')}."
    )
st.caption(
    f"Intervals: {confidence} bootstrap intervals over the test videos (registry.confidence); those of a difference "
    "(the gap, the autoencoder's gain) resample both rows' predictions of the same videos together. A wide "
    "interval means a small test split: read one run against the spread over seeds (`adaptation.seeds`, which "
    "trains every row once a seed; the summary is then that of the means, each difference with its range)."
)


# --------------------------------------------------------------------------- the rows

rows = report.rows
marks = D.adaptation_marks(report)
shown = rows.assign(
    mark=rows["setting"].map(lambda name: marks.get(name, "")),
    labels=rows["target_labels"].map(lambda t: D.LABELS_SEEN.get(t, t)),
)[["setting", "mark", "seed", "labels", *D.ADAPTATION_COLUMNS]]
num = st.column_config.NumberColumn
st.subheader("Every setting on the target's test split")
st.dataframe(
    shown,
    hide_index=True,
    key="adaptation_table",
    column_config={
        "setting": "setting",
        "mark": st.column_config.TextColumn("summary", width="large"),
        "seed": num("seed", format="%d", help="the run's seed (adaptation.seeds); source-only is the source model"),
        "labels": st.column_config.TextColumn("target labels", help="what of the target's labels training saw"),
        "test_macro_f1": num("test macro-F1", format="%.3f"),
        "ci_low": num("CI low", format="%.3f", help="bootstrap interval of the test macro-F1 over test videos"),
        "ci_high": num("CI high", format="%.3f"),
        "test_accuracy": num("test accuracy", format="%.3f"),
        "target_im": num("IM", format="%.3f", help="information maximisation on unlabelled target videos; picks"),
        "target_snd": num("SND", format="%.3f", help="soft neighbourhood density (recorded, does not pick)"),
        "target_dev": num("DEV risk", format="%.3f", help="deep embedded validation; lower is better"),
        "test_videos": num("test videos", format="%d"),
        "epochs": num("epochs", format="%d"),
    },
)

chart = rows.dropna(subset=["test_macro_f1"])
if not chart.empty:
    order = chart["setting"].tolist()
    base = alt.Chart(chart).encode(
        y=alt.Y("setting:N", sort=order, title=None),
        color=alt.Color("target_labels:N", title="target labels", legend=alt.Legend(orient="bottom")),
    )
    points = base.mark_point(filled=True, size=80).encode(
        x=alt.X("test_macro_f1:Q", title=f"test macro-F1 ({confidence} CI)", scale=alt.Scale(domain=[0, 1])),
        tooltip=["setting", "seed", "test_macro_f1", "ci_low", "ci_high", "target_im"],
    )
    bars = base.mark_rule().encode(x="ci_low:Q", x2="ci_high:Q")
    st.altair_chart(points + bars, width="stretch")
