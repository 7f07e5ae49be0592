"""Subgroup fairness: per phenotype, C-index or AUROC per sex, race, age band and site with CIs,
difference and ratio to the overall value; the largest gap flagged against a threshold."""
import plotly.graph_objects as go
import streamlit as st

import common

run = common.current_run()
st.title("Subgroup fairness")
table = common.read("disease_table", run, "fairness")
phenotypes = list(dict.fromkeys(table.phenotype))
overall = table[table.attribute == "overall"].groupby("phenotype").n_events.max()
c1, c2, c3 = st.columns(3)
phenotype = c1.selectbox("phenotype", phenotypes,  # first shown: the one with the most events
                         index=phenotypes.index(overall.idxmax()) if len(overall) else 0)
metric = c2.selectbox("metric", ["c_index", "auroc"],
                      format_func={"c_index": "C-index", "auroc": "AUROC at the horizon"}.get)
threshold = c3.slider("flag gaps larger than", 0.0, 0.5, 0.1, 0.01)
rows, gap = common.read("fairness", run, phenotype, metric, threshold)

if gap["attribute"] == "":
    st.info("Fewer than two groups of any attribute could be scored; see the table.")
elif gap["flagged"]:
    st.warning(f"Largest gap: {gap['attribute']} {gap['low']} vs {gap['high']}, "
               f"{gap['gap']:.3f} > {threshold:.2f}.")
else:
    st.success(f"Largest gap: {gap['attribute']} {gap['low']} vs {gap['high']}, "
               f"{gap['gap']:.3f} ≤ {threshold:.2f}.")

scored = rows[rows.value.notna()]
if len(scored):
    labels = [f"{a}: {g}" for a, g in zip(scored.attribute, scored.group)]
    fig = go.Figure(go.Scatter(
        x=labels, y=scored.value, mode="markers",
        error_y=dict(type="data", symmetric=False, array=scored.ci_high - scored.value,
                     arrayminus=scored.value - scored.ci_low),
        hovertext=[f"n={n}, events={e}" for n, e in zip(scored.n, scored.n_events)]))
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="chance")
    fig.update_layout(yaxis_title=metric, height=420, margin=dict(t=30))
    st.plotly_chart(fig, width="stretch")

st.subheader(f"Groups: {phenotype}")
st.dataframe(rows[["attribute", "group", "n", "n_events", "value", "ci_low", "ci_high",
                   "difference", "ratio", "status"]].round(3), hide_index=True,
             width="stretch")
small = rows[rows.value.isna()]
if len(small):
    st.caption(f"{len(small)} groups could not be scored (listed above with the reason).")
