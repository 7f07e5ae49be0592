"""Record viewer: hypnogram scored vs predicted, hypnodensity, AHI and events, and the signals of
a chosen window per modality read lazily from the store."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import common
from sleepfm.vocab import EPOCH_S, STAGE_NAMES, ahi_from_events

run = common.current_run()
st.title("Record viewer")
records = common.read("record_ids", run)
if not records:
    st.warning(f"{run.path}: the store holds no record; run `sleepfm preprocess EDF_DIR --out "
               f"{run.path}`.")
    st.stop()
wanted = st.session_state.get("record")
record = st.selectbox("record", records, index=records.index(wanted) if wanted in records else 0)
st.session_state["record"] = record

hyp = common.read("hypnogram", run, record)
events = common.read("events", run, record)
c1, c2, c3 = st.columns(3)
c1.metric("epochs", len(hyp))
c2.metric("scored events", len(events))
if "true" in hyp and (hyp.true >= 1).any():
    c3.metric("AHI (scored)", f"{ahi_from_events(events, hyp.true.to_numpy()):.1f} /h")
else:
    c3.metric("AHI (scored)", "–")

if len(hyp):
    hours = hyp.epoch * EPOCH_S / 3600
    fig = go.Figure()
    fig.add_scatter(x=hours, y=hyp.true, name="scored", line_shape="hv")
    if "pred" in hyp:
        fig.add_scatter(x=hours, y=hyp.pred, name="predicted", line_shape="hv",
                        line=dict(dash="dot"))
    fig.update_layout(title="hypnogram", height=260, margin=dict(t=40), xaxis_title="hours",
                      yaxis=dict(tickvals=list(range(5)), ticktext=list(STAGE_NAMES),
                                 autorange="reversed"))
    st.plotly_chart(fig, width="stretch")
    probs = [c for c in hyp.columns if c.startswith("p_")]
    if probs:
        fig = go.Figure([go.Scatter(x=hours, y=hyp[c], name=c[2:], stackgroup="p",
                                    line=dict(width=0)) for c in probs])
        fig.update_layout(title="hypnodensity (predicted stage probabilities)", height=240,
                          margin=dict(t=40), yaxis_range=[0, 1], xaxis_title="hours")
        st.plotly_chart(fig, width="stretch")
    else:
        st.caption("No predictions for this record: only the staging report's held-out records "
                   "have them.")
if len(events):
    st.subheader("Scored events")
    st.dataframe(events, hide_index=True, width="stretch")

st.subheader("Signals")
duration = common.read("record_duration", run, record)
s1, s2 = st.columns([3, 1])
seconds = s2.selectbox("window (s)", [30, 60, 300], index=0)
start = s1.slider("start (s)", 0.0, max(0.0, duration - seconds), 0.0, float(EPOCH_S))
window, rate = common.read("signals", run, record, start, float(seconds))
channels = [(m, c, x) for m, chans in window.items() for c, x in chans.items()]
fig = make_subplots(rows=len(channels), cols=1, shared_xaxes=True, vertical_spacing=0.02,
                    subplot_titles=[f"{m} · {c}" for m, c, _ in channels])
step = max(1, int(len(channels[0][2]) // 4000)) if channels else 1  # at most ~4,000 points a trace
for i, (_, _, x) in enumerate(channels, start=1):
    t = start + np.arange(0, len(x), step) / rate
    fig.add_scatter(x=t, y=x[::step], row=i, col=1, showlegend=False, line=dict(width=1))
fig.update_layout(height=110 * max(1, len(channels)) + 60, margin=dict(t=40))
st.plotly_chart(fig, width="stretch")
st.caption(f"z-scored signals at {rate:g} Hz from the store; {start:g}–{start + seconds:g} s")
