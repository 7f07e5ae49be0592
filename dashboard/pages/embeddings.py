"""Embeddings explorer: a 2-D map (UMAP when installed, else PCA) of night or epoch embeddings,
coloured by stage, risk, sex, race, age or site; selected points are listed and open in the
record viewer."""
import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import common
import run_data as rd

run = common.current_run()
st.title("Embeddings explorer")
level = st.radio("embeddings", ["nights", "epochs"], horizontal=True)
method = st.radio("map", ["auto", "PCA", "umap"], horizontal=True,
                  help="auto: UMAP when umap-learn is installed, else PCA")
if level == "nights":
    ids, X = common.read("night_embeddings", run)
    points = pd.DataFrame({"record_id": ids}).set_index("record_id")
    if (run.report_dir("disease") / "risks.csv").is_file():
        points = points.join(common.read("subjects", run))
    else:
        points = points.assign(subject_id=list(run.subjects(ids).values()))
    options = [c for c in (*rd.ATTRIBUTES, "split") if c in points.columns] + \
        [c for c in points.columns if c.startswith("risk_")]
else:
    records = common.read("record_ids", run)
    chosen = st.multiselect("records", records, default=records[:5])
    if not chosen:
        st.info("Choose at least one record.")
        st.stop()
    frame = common.read("epoch_embeddings", run, tuple(chosen))
    X = np.stack(frame.x.to_numpy())
    points = frame.drop(columns="x").set_index("record_id", drop=False)
    points.index.name = None
    options = ["stage", "record_id"]
colour = st.selectbox("colour by", options or ["none"])
coords, used = common.project(X, method.lower())
points = points.assign(x=coords[:, 0], y=coords[:, 1]).reset_index(
    names="record" if level == "nights" else "row")
record_column = "record" if level == "nights" else "record_id"
fig = px.scatter(points, x="x", y="y", color=None if colour == "none" else colour,
                 hover_data=[c for c in (record_column, "subject_id", "epoch") if c in points],
                 labels={"x": f"{used} 1", "y": f"{used} 2"})
fig.update_layout(height=520, margin=dict(t=30))
st.caption(f"{len(points)} points, {used} of {X.shape[1]}-dimensional embeddings")
event = st.plotly_chart(fig, width="stretch", on_select="rerun",
                        selection_mode=("points", "box", "lasso"), key="map")
picked = [p["point_index"] for p in (event.selection.points if event else [])]
if picked:
    rows = points.iloc[sorted(set(picked))]
    st.subheader(f"{len(rows)} selected")
    st.dataframe(rows.drop(columns=["x", "y"]), hide_index=True, width="stretch")
    record = st.selectbox("open in the record viewer", list(dict.fromkeys(rows[record_column])))
    if st.button("open"):
        st.session_state["record"] = record
        st.switch_page("pages/records.py")
else:
    st.caption("Select points (click, box or lasso) to list them and open one in the record viewer.")
