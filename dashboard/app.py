"""sleepfm dashboard: ``sleepfm dashboard RUN_DIR`` (or ``streamlit run dashboard/app.py -- RUN_DIR``).

Reads a run directory made by the CLI, never writes into it; binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run_data, common

st.set_page_config(page_title="sleepfm", layout="wide")
PAGES = [st.Page("pages/overview.py", title="Overview", default=True),
         st.Page("pages/embeddings.py", title="Embeddings"),
         st.Page("pages/fairness.py", title="Subgroup fairness"),
         st.Page("pages/enrichment.py", title="Trial enrichment"),
         st.Page("pages/records.py", title="Record viewer")]
st.navigation(PAGES).run()
