"""Overview: what the run holds, each stage's time and settings, the encoder's card, headline
metrics with CIs, and the command that makes each stage not yet done."""
import json

import pandas as pd
import streamlit as st

import common

run = common.current_run()
st.title("Run overview")
st.caption(f"run directory: `{run.path}` (read-only)")
info = common.read("overview", run)
cols = st.columns(4)
cols[0].metric("records", info["records"])
cols[1].metric("subjects", info["subjects"])
cols[2].metric("embedded", info["embedded"])
cols[3].metric("modalities", len(info["modalities"]))
if info["modalities"]:
    st.caption("records per modality in the last preprocessing batch "
               f"({info['last_batch']} records): " +
               ", ".join(f"{m} {n}" for m, n in info["modalities"].items()))
if run.demo_cohort_dir.is_dir():
    st.info("This run holds a **synthetic** cohort (`demo_cohort/`): its outcomes follow a known "
            "hazard of what the nights show. Figures on it measure how well the pipeline recovers "
            "that hazard, not performance on patients.")

st.header("Stages")
stages = common.read("stage_table", run)
st.dataframe(stages[["stage", "makes", "done", "time"]], hide_index=True,
             width="stretch")
missing = stages[~stages.done]
if len(missing):
    st.subheader("Not done yet")
    for row in missing.itertuples():
        st.markdown(f"**{row.stage}** ({row.makes}):")
        st.code(row.command, language="bash")
with st.expander("Settings of each stage"):
    for row in stages[stages.done].itertuples():
        st.markdown(f"**{row.stage}**")
        st.json(json.loads(row.settings), expanded=False)

st.header("Encoder")
card = common.read("encoder_card", run)
if card is None:
    st.code(f"sleepfm pretrain --run {run.path}", language="bash")
else:
    st.table(pd.DataFrame({"": list(card), "value": [str(v) for v in card.values()]})
             .set_index(""))

st.header("Headline metrics (held-out subjects, 95 % CI)")
head = common.read("headline", run)
if head.empty:
    st.write("No report yet: run `sleepfm evaluate staging|events|disease --run RUN_DIR`.")
else:
    head = head.assign(**{"95 % CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in
                                      zip(head.ci_low, head.ci_high)]})
    st.dataframe(head[["report", "model", "phenotype", "metric", "value", "95 % CI"]]
                 .round({"value": 3}), hide_index=True, width="stretch")
