"""Trial enrichment: rank the held-out candidates by predicted risk after inclusion filters;
enrichment factor with CI over q; Kaplan–Meier of selected vs not; the ranked list as CSV."""
import json

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import common
import run_data as rd

run = common.current_run()
st.title("Trial enrichment")
table = common.read("subjects", run)
metrics = json.loads((run.report_dir("disease") / "metrics.json").read_text())
test = table[table.split == "test"]

c1, c2, c3 = st.columns(3)
phenotype = c1.selectbox("phenotype", rd.phenotypes(table),
                         format_func=lambda p: metrics.get("names", {}).get(p, p))
model = c2.radio("ranked by", ["head", "baseline"], horizontal=True,
                 format_func={"head": "Cox head", "baseline": "demographics baseline"}.get)
horizon = c3.number_input("horizon (years)", 0.5, 30.0, float(metrics.get("horizon", 6.0)), 0.5)
f1, f2, f3, f4 = st.columns(4)
ages = test.age.dropna()
lo, hi = (float(np.floor(ages.min())), float(np.ceil(ages.max()))) if len(ages) else (0.0, 100.0)
age = f1.slider("age", lo, hi, (lo, hi), 1.0)
sexes = sorted(test.sex.dropna().astype(str).unique()) if "sex" in test else []
sex = f2.multiselect("sex", sexes, default=sexes)
sites = sorted(test.site.dropna().astype(str).unique()) if "site" in test else []
site = f3.multiselect("site", sites, default=sites)
exclude = f4.checkbox("exclude prevalent cases", True)
q = st.slider("fraction recruited (q)", 0.01, 1.0, 0.2, 0.01)

if model == "baseline":  # rank by the baseline's risk: the same table with its risks
    risks = common.read("disease_table", run, "risks")
    base = risks[risks.phenotype == phenotype].set_index("record_id").baseline_risk
    table = table.assign(**{f"risk_{phenotype}": base.reindex(table.index)})
quantiles = sorted({0.05, 0.1, 0.2, 0.3, 0.5, 1.0, round(q, 2)})
try:
    report, ranked = rd.enrichment(table, phenotype, horizon=horizon, quantiles=quantiles,
                                   age=age, sex=sex if sexes else None,
                                   site=site if sites else None, exclude_prevalent=exclude,
                                   n_boot=common.N_BOOT)
except rd.SleepFMError as err:
    st.warning(str(err))
    st.stop()
chosen = rd.selected(ranked, q)
top = common.read("disease_table", run, "attribution_risks") \
    if (run.report_dir("disease") / "attribution_risks.csv").is_file() else None
if top is not None:
    chosen = chosen.assign(top_modality=chosen.record_id.map(rd.top_modality(top, phenotype)))

m1, m2, m3 = st.columns(3)
m1.metric("eligible candidates", len(ranked))
m2.metric("recruited", len(chosen))
if report is None:
    m3.metric(f"enrichment at q = {q:.2f}", "–")
    st.info("No eligible candidate has a known outcome at this horizon.")
else:
    row = report.summary.set_index("quantile").loc[round(q, 2)]
    m3.metric(f"enrichment at q = {q:.2f}", f"{row.enrichment:.2f}×",
              help=f"95 % CI [{row.ci_low:.2f}, {row.ci_high:.2f}], {common.N_BOOT} resamples; "
                   f"event rate {row.event_rate:.2f} vs {row.overall_rate:.2f} overall")
    st.caption(f"enrichment at q = {q:.2f}: {row.enrichment:.2f}× [{row.ci_low:.2f}, "
               f"{row.ci_high:.2f}] (event by {horizon:g} y: {row.event_rate:.2f} among the "
               f"recruited vs {row.overall_rate:.2f} among all eligible)")
    s = report.summary
    fig = go.Figure([
        go.Scatter(x=s["quantile"], y=s.ci_high, mode="lines", line=dict(width=0),
                   showlegend=False),
        go.Scatter(x=s["quantile"], y=s.ci_low, mode="lines", fill="tonexty",
                   line=dict(width=0), name="95 % CI"),
        go.Scatter(x=s["quantile"], y=s.enrichment, mode="lines+markers", name="EF(q)")])
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="no enrichment")
    fig.update_layout(xaxis_title="q", yaxis_title="enrichment factor", height=350,
                      margin=dict(t=30))
    st.plotly_chart(fig, width="stretch")

st.subheader("Ranked candidates")
st.caption("top modality: the one whose removal lowers this subject's risk most, relative to the "
           "other subjects (from the attribution).")
st.dataframe(chosen.round(3), hide_index=True, width="stretch")
st.download_button("download the ranked list (CSV)", ranked.to_csv(index=False),
                   file_name=f"candidates_{phenotype}.csv", mime="text/csv")

curves = rd.km_curves(table, phenotype, chosen.record_id)
if len(curves):
    fig = px.line(curves, x="time", y="survival", color="group", line_shape="hv",
                  labels={"time": "years since PSG", "survival": f"free of {phenotype}"})
    fig.update_layout(height=350, margin=dict(t=30))
    st.plotly_chart(fig, width="stretch")
