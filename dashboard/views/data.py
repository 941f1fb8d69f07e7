"""Data: class counts per split, quarantined files with reasons, sample frames and a clip per class."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import data as D
from dashboard import ui

ctx = ui.context()
st.title("Data")
cfg = ui.project_or_stop(ctx)

names = list(cfg.datasets)
name = st.selectbox(
    "Data set", names, index=names.index(cfg.train.dataset) if cfg.train.dataset in names else 0, key="data_set"
)
raw_dir = cfg.datasets[name].raw
probe_dir, frames_dir, splits_path = cfg.probe_dir(name), cfg.frames_dir(name), cfg.splits_path(name)

manifest = D.read_csv(probe_dir / "manifest.csv")
quarantine = D.read_csv(probe_dir / "quarantine.csv")
splits = D.read_json(splits_path)
index = D.read_json(frames_dir / "index.json")

cols = st.columns(4)
cols[0].metric("usable videos", "-" if manifest is None else len(manifest))
cols[1].metric("quarantined", "-" if quarantine is None else len(quarantine))
cols[2].metric("classes", "-" if splits is None else len(splits.get("classes", [])))
if splits is not None and index is not None:
    from vt_models.io.dvc import data_version

    # the same function training uses, so this is the version the runs were tagged with
    version = data_version(frames_dir, splits_path)
    cols[3].metric("data version", version[:20], help=version)
st.caption(f"raw videos `{raw_dir}` · probe `{probe_dir}` · frames `{frames_dir}` · splits `{splits_path}`")

st.subheader("Class counts per split")
if splits is None:
    ui.hint(f"No `{splits_path}` yet: run `{D.CMD_DEMO}` (or `vt split -d {name}`).")
else:
    counts = D.class_counts(splits)
    st.dataframe(counts, key="data_counts")
    long = counts.drop(columns="total").reset_index().melt(id_vars="class", var_name="split", value_name="videos")
    chart = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("class:N", title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("videos:Q"),
            color=alt.Color("split:N", sort=["train", "val", "test"]),
            tooltip=["class", "split", "videos"],
        )
    )
    st.altair_chart(chart.properties(height=260), width="stretch")
    folds = splits.get("fold_counts") or []
    if folds:
        st.caption(
            f"{len(folds)} cross-validation folds over train+val (grouped: clips of one recording stay together)."
        )

st.subheader("Quarantined files")
if quarantine is None:
    ui.hint(f"No `{probe_dir / 'quarantine.csv'}` yet: run `{D.CMD_DEMO}` (or `vt probe -d {name}`).")
elif quarantine.empty:
    st.success("No quarantined files: every video decoded.", icon=":material/check_circle:")
else:
    st.dataframe(
        quarantine,
        hide_index=True,
        key="data_quarantine",
        column_config={"path": "file (relative to the raw folder)", "reason": "why it was left out"},
    )

st.subheader("Samples per class")
if index is None:
    ui.hint(f"No extracted frames yet: run `{D.CMD_DEMO}` (or `vt extract -d {name}`).")
else:
    prefer = splits.get("splits", {}).get("test", []) if splits else []
    where = D.split_of(splits) if splits else {}
    play = st.toggle("Show a short clip of each sample", value=False, key="data_play")
    for label, videos in D.samples_per_class(index, 1, prefer).items():
        video = videos[0]
        npz = frames_dir / video["file"]
        st.markdown(f"**{label}** · `{video['path']}` ({where.get(video['path'], 'no split')})")
        frames_col, clip_col = st.columns([3, 1]) if play else (st.container(), None)
        with frames_col:
            if npz.is_file():
                frames = D.load_stored_frames(str(npz), npz.stat().st_mtime)
                st.image(
                    list(frames), width=72, caption=[f"#{i}" for i in video.get("frame_indices", range(len(frames)))]
                )
            else:
                st.caption(f"frames file `{npz}` missing: `dvc pull` or `vt extract -d {name}`")
        if clip_col is not None:
            clip = raw_dir / video["path"]
            with clip_col:
                if clip.is_file():
                    st.video(str(clip), loop=True, muted=True)
                else:
                    st.caption(f"raw clip `{clip}` not here (`dvc pull`)")
