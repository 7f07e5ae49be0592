"""What every page shares: the run being shown, cached reads of it, and clean messages."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

import run_data as rd
from sleepfm import RunDir
from sleepfm.exceptions import SleepFMError

#: Environment variable naming the run when no path is given after ``--`` (tests use it).
RUN_ENV = "SLEEPFM_DASHBOARD_RUN"
#: Bootstrap resamples behind the dashboard's interactive intervals (the reports use 1,000).
N_BOOT = 200


def run_path() -> str | None:
    """The run directory: ``streamlit run app.py -- RUN_DIR``, else ``$SLEEPFM_DASHBOARD_RUN``."""
    if Path(sys.argv[0]).name == "app.py" and len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get(RUN_ENV)


def current_run() -> RunDir:
    """The run shown; a missing one stops the page with the message that says what to do."""
    try:
        return rd.open_run(run_path())
    except rd.RunMissing as err:
        st.error(str(err))
        st.stop()


def version(run: RunDir) -> tuple:
    """Changes whenever a stage is recorded in ``run.json`` (the caches' key)."""
    return rd.file_signature(run.run_json)


@st.cache_data(show_spinner="Reading the run…", max_entries=64)
def _cached(name: str, path: str, stamp: tuple, args: tuple, kwargs: tuple):
    return getattr(rd, name)(RunDir(path), *args, **dict(kwargs))


def read(name: str, run: RunDir, *args, **kwargs):
    """``run_data.<name>(run, ...)``, cached until the run changes; a part of the run that is
    missing stops the page with its message (never a traceback)."""
    try:
        return _cached(name, str(run.path), version(run), args, tuple(sorted(kwargs.items())))
    except SleepFMError as err:
        st.warning(str(err))
        st.stop()


@st.cache_data(show_spinner="Computing the map…", max_entries=16)
def project(X, method: str):
    """:func:`run_data.project_2d`, cached."""
    return rd.project_2d(X, method)
