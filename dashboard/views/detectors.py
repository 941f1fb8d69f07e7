"""Detectors: test mAP, tracking with and without the tracker, cost; the one to ship; per-class AP and a clip."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data as D
from dashboard import ui

ctx = ui.context()
st.title("Which detector should we ship?")
cfg = ui.project_or_stop(ctx)

names = D.detector_names(cfg)
files = [D.read_detector(cfg, n) for n in names]
table = D.detector_table(files)
if table.empty:
    ui.hint(
        f"No detector results yet for {', '.join(f'`{n}`' for n in names)} (params `detect.detectors`): run "
        f"`{D.CMD_DETECT_TRAIN}` then `{D.CMD_DETECT_EVALUATE}` from the project root, or `{D.CMD_REPRO}` for the "
        f"whole pipeline. They write `{D.detector_train_dir(cfg, names[0]).parent}/NAME/` and "
        f"`{D.detector_report_dir(cfg, names[0]).parent}/NAME/`."
    )
    st.stop()


# --------------------------------------------------------------------------- the answer

best = D.recommend_detector(table)
model = cfg.detect.model_name
decision = D.detect_promotion(model)
# The alias is the registry's own word; the JSON is DVC's record of the last decision (either may be missing).
champion = D.alias_row(D.load_versions(ctx.uri, model), "champion")

# The gate's floor: a decision that left no champion, or (no decision, no champion) a best mAP under detect.min_map.
blocked = D.nothing_to_ship(decision)
if (
    blocked is None
    and decision is None
    and champion is None
    and best is not None
    and not best["map"] >= cfg.detect.min_map
):
    blocked = (
        f"{D.NOTHING_TO_SHIP}: the best test mAP, `{best['detector']}` {ui.fmt(best['map'])}, is below "
        f"detect.min_map {cfg.detect.min_map:g}"
    )

if best is None:
    ui.hint(f"Trained but not evaluated on the test split yet: run `{D.CMD_DETECT_EVALUATE}` to score the detectors.")
elif blocked:
    st.warning(f"**Nothing to ship yet**: {blocked.removeprefix(D.NOTHING_TO_SHIP + ': ')}", icon=":material/block:")
    st.caption(
        f"Highest test mAP in this table: `{best['detector']}` ({ui.fmt(best['map'])}); a detector ships only once "
        f"`{D.CMD_DETECT_PROMOTE}` finds it clears the floor (bootstrap CI of mAP over test videos above 0, "
        f"mAP >= detect.min_map {cfg.detect.min_map:g})."
    )
else:
    st.success(
        f"**Ship `{best['detector']}`**: highest test mAP {ui.fmt(best['map'])} (mAP@.5 {ui.fmt(best['map_50'])}), "
        f"{ui.fmt(best['ms_per_frame'], '{:.1f}')} ms/frame; with tracking MOTA {ui.fmt(best['mota_tracked'])}, "
        f"IDF1 {ui.fmt(best['idf1_tracked'])}, HOTA {ui.fmt(best['hota_tracked'])}.",
        icon=":material/trophy:",
    )
    ties = table[(table["map"] == best["map"]) & (table["detector"] != best["detector"])]
    if not ties.empty:
        st.caption(f"Tied on mAP with {', '.join(f'`{n}`' for n in ties['detector'])}: the faster one is recommended.")

if decision is not None:
    version, detector, score = D.promotion_champion(decision)
    detector = detector or (champion["backbone"] if champion and str(champion["version"]) == version else None)
    verdict = "promoted to champion" if str(decision.get("promoted")).lower() == "true" else "kept as challenger"
    champ = f"v{version}" + (f" (`{detector}`)" if detector else "") if version else "none"
    st.markdown(
        f"**Registry `{model}`**: champion {champ}, test {decision.get('metric', 'map')} {ui.fmt(score)}. "
        f"Last decision: v{decision.get('candidate_version')} (`{decision.get('candidate_backbone')}`) {verdict}: "
        f"{decision.get('reason', '-')}"
    )
    if best is not None and detector and detector != best["detector"]:
        st.caption(
            f"The champion is not this table's best: run `{D.CMD_DETECT_PROMOTE} -d {best['detector']}` to put "
            f"it through the gate (it moves the champion only when it wins by the margin, {decision.get('margin', 0)})."
        )
elif champion is not None:
    st.markdown(f"**Registry `{model}`**: champion v{champion['version']} (`{champion['backbone']}`).")
else:
    ui.hint(
        f"No registry decision for `{model}` yet: run `{D.CMD_DETECT_PROMOTE}` to register the best validated "
        "detector and gate it on test mAP."
    )

for f in files:
    if not f.any:
        ui.hint(
            f"`{f.name}` has no results: run `{D.CMD_DETECT_TRAIN} -d {f.name}` "
            f"and `{D.CMD_DETECT_EVALUATE} -d {f.name}`."
        )
    elif f.test is None:
        ui.hint(f"`{f.name}` is trained but not evaluated: run `{D.CMD_DETECT_EVALUATE} -d {f.name}`.")


# --------------------------------------------------------------------------- the table


def mark(name: str) -> str:
    marks = [
        m
        for m, hit in (
            ("best test mAP" if blocked else "recommended", best is not None and name == best["detector"]),
            ("champion", champion is not None and name == champion["backbone"]),
        )
        if hit
    ]
    return ", ".join(marks)


shown = table.assign(ship=table["detector"].map(mark))[["ship", "detector", *D.DETECT_COLUMNS, "data_version"]]
num = st.column_config.NumberColumn
st.subheader("Detectors on the test split")
st.dataframe(
    shown,
    hide_index=True,
    key="det_table",
    column_config={
        "ship": "ship",
        "detector": "detector",
        "map": num("mAP", format="%.3f", help="COCO mAP@[.5:.95]"),
        "map_50": num("mAP@.5", format="%.3f"),
        "precision": num("precision", format="%.3f"),
        "recall": num("recall", format="%.3f"),
        "mota_tracked": num("MOTA tracked", format="%.3f"),
        "mota_untracked": num("MOTA untracked", format="%.3f"),
        "mota_gain": num("MOTA gain", format="%+.3f", help="tracked minus untracked: what the tracker adds"),
        "idf1_tracked": num("IDF1 tracked", format="%.3f"),
        "idf1_untracked": num("IDF1 untracked", format="%.3f"),
        "idf1_gain": num("IDF1 gain", format="%+.3f", help="tracked minus untracked"),
        "hota_tracked": num("HOTA tracked", format="%.3f", help="TrackEval's HOTA: sqrt(DetA * AssA)"),
        "hota_untracked": num("HOTA untracked", format="%.3f"),
        "hota_gain": num("HOTA gain", format="%+.3f", help="tracked minus untracked"),
        "id_switches_tracked": num("ID switches tracked", format="%d"),
        "id_switches_untracked": num("ID switches untracked", format="%d"),
        "ms_per_frame": num("ms / frame", format="%.1f"),
        "params_m": num("params (M)", format="%.2f"),
        "val_map": num("val mAP", format="%.3f", help="best epoch"),
        "train_s": num("training (s)", format="%.0f"),
        "data_version": "data version",
    },
)
st.caption(
    "Test scores: `vt detect evaluate` on the held-out split; MOT metrics over the test videos, with the "
    "ByteTrack-style tracker and with per-frame detections alone (untracked). The recommendation is the "
    "highest test mAP, ties going to the faster detector; the registry gate decides on its own test mAP."
)


# --------------------------------------------------------------------------- one detector

st.subheader("One detector")
order = table["detector"].tolist()
pick = st.selectbox("Detector", order, index=order.index(best["detector"]) if best else 0, key="det_pick")
row = table.set_index("detector").loc[pick]
cols = st.columns(5)
cols[0].metric("test mAP", ui.fmt(row["map"]))
for col, key in ((cols[1], "mota"), (cols[2], "idf1"), (cols[3], "hota")):
    gain = row[f"{key}_gain"]
    col.metric(
        f"{key.upper()} tracked",
        ui.fmt(row[f"{key}_tracked"]),
        delta=None if pd.isna(gain) else f"{gain:+.3f} vs untracked",
        delta_color="normal" if gain else "off",
    )
cols[4].metric(
    "ID switches tracked",
    ui.fmt(row["id_switches_tracked"], "{:.0f}"),
    help=f"untracked: {ui.fmt(row['id_switches_untracked'], '{:.0f}')}",
)

left, right = st.columns(2)
with left:
    st.markdown("**Per-class AP on the test split**")
    per_class = D.detector_per_class(cfg, pick)
    if per_class is None:
        ui.hint(f"No `per_class.csv` for `{pick}`: run `{D.CMD_DETECT_EVALUATE} -d {pick}`.")
    else:
        long = per_class.melt(id_vars="class", value_vars=["ap", "ap50"], var_name="kind", value_name="value")
        long["kind"] = long["kind"].map({"ap": "AP@[.5:.95]", "ap50": "AP@.5"})
        chart = (
            alt.Chart(long.dropna(subset=["value"]))
            .mark_bar()
            .encode(
                x=alt.X("class:N", title=None, axis=alt.Axis(labelAngle=0)),
                xOffset="kind:N",
                y=alt.Y("value:Q", title="AP", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("kind:N", title=None, legend=alt.Legend(orient="bottom")),
                tooltip=["class", "kind", alt.Tooltip("value:Q", format=".3f")],
            )
        )
        st.altair_chart(chart.properties(height=280), width="stretch")
        absent = per_class.loc[per_class["ap"].isna(), "class"].tolist()
        if absent:
            st.caption(f"No ground truth in the test split for: {', '.join(absent)} (no AP).")
with right:
    st.markdown("**Validation mAP per epoch**")
    history = D.detector_history(cfg, pick)
    curves = [c for c in ("val_map", "val_map_50") if history is not None and c in history]
    if not curves:
        ui.hint(f"No `history.csv` with validation mAP for `{pick}`: run `{D.CMD_DETECT_TRAIN} -d {pick}`.")
    else:
        long = history.melt(id_vars="epoch", value_vars=curves, var_name="metric", value_name="value").dropna()
        chart = (
            alt.Chart(long)
            .mark_line(point=True)
            .encode(
                x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
                y=alt.Y("value:Q", title="mAP"),
                color=alt.Color("metric:N", title=None, legend=alt.Legend(orient="bottom")),
                tooltip=["epoch", "metric", alt.Tooltip("value:Q", format=".3f")],
            )
        )
        st.altair_chart(chart.properties(height=280), width="stretch")

st.markdown("**Annotated test clip**")
clip, tracks = D.detector_sample(cfg, pick)
if clip is None:
    ui.hint(f"No annotated clip for `{pick}`: `{D.CMD_DETECT_EVALUATE} -d {pick}` renders one.")
else:
    video_col, tracks_col = st.columns([1, 1])
    with video_col:
        st.video(clip, format="video/mp4", loop=True, muted=True)
    with tracks_col:
        if tracks is None:
            st.caption("No `sample.tracks.json` next to the clip.")
        else:
            st.caption(
                f"`{tracks.get('video', '?')}` · {tracks.get('frames_processed', '?')} frames at "
                f"{ui.fmt(tracks.get('fps'), '{:g}')} fps · {len(tracks.get('tracks', []))} tracks"
            )
            st.dataframe(
                D.track_table(tracks),
                hide_index=True,
                key="det_tracks",
                column_config={
                    "track_id": "track",
                    "label": "label",
                    "frames": "frames",
                    "predicted": st.column_config.NumberColumn(
                        "predicted", help="frames carried through occlusion (no detection)"
                    ),
                    "first_s": num("from (s)", format="%.2f"),
                    "last_s": num("to (s)", format="%.2f"),
                    "mean_score": num("mean score", format="%.2f", help="over the frames it was detected in"),
                },
            )
