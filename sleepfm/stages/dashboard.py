"""``sleepfm dashboard``: the Streamlit app of ``dashboard/`` on a run directory.

The package never imports the app: this module only finds ``dashboard/app.py`` beside the package
and starts Streamlit on it, bound to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import subprocess
import sys
import warnings
from pathlib import Path

from ..config import DashboardConfig, load_config
from ..exceptions import InvalidParameterError, SleepFMError, StoreError
from ..rundir import RunDir

#: The app, beside the package in the source tree.
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def dashboard_command(run_dir, config: DashboardConfig | str | None = None,
                      **overrides) -> list[str]:
    """The command line that serves the dashboard on ``run_dir`` (see :func:`serve_dashboard`).

    Parameters
    ----------
    run_dir : path-like or RunDir
        A run directory made by the CLI (it is only read).
    config : DashboardConfig, dict or YAML path, optional
        ``port`` and ``address``; ``**overrides`` replace single fields.

    Returns
    -------
    list of str
        ``python -m streamlit run dashboard/app.py ... -- RUN_DIR``, for :mod:`subprocess`.

    Raises
    ------
    StoreError
        ``run_dir`` is not a run directory.
    SleepFMError
        Streamlit or the app is missing.
    """
    config = load_config(DashboardConfig, config, **overrides)
    if not 0 < config.port < 65536:
        raise InvalidParameterError(f"port must be 1-65535, got {config.port}.")
    run = RunDir(run_dir)
    if not run.run_json.is_file():
        raise StoreError(f"{run.path}: not a run directory (no run.json); make one with "
                         f"`sleepfm demo --run {run.path}`.")
    if importlib.util.find_spec("streamlit") is None:
        raise SleepFMError("the dashboard needs Streamlit: pip install 'sleepfm[dashboard]'.")
    if not APP.is_file():
        raise SleepFMError(f"{APP}: the dashboard ships with the source tree; install sleepfm "
                           "from a clone (pip install -e .).")
    if not is_loopback(config.address):
        warnings.warn(f"the dashboard binds to {config.address}: anyone who can reach this "
                      "machine on that address can read the run's data.", UserWarning,
                      stacklevel=2)
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", config.address, "--server.port", str(config.port),
            "--server.headless", "true", "--server.fileWatcherType", "none",
            "--server.runOnSave", "false", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "viewer",
            "--", str(run.path.resolve())]


def dashboard_url(config: DashboardConfig) -> str:
    """Where the dashboard of ``config`` answers."""
    host = f"[{config.address}]" if ":" in config.address else config.address
    return f"http://{host}:{config.port}"


def serve_dashboard(run_dir, config: DashboardConfig | str | None = None, **overrides) -> int:
    """Serve the dashboard on ``run_dir`` until interrupted, printing its URL.

    Parameters
    ----------
    run_dir : path-like or RunDir
    config : DashboardConfig, dict or YAML path, optional
        As :func:`dashboard_command`.

    Returns
    -------
    int
        Streamlit's exit status (0 after Ctrl+C).

    Raises
    ------
    StoreError, SleepFMError
        As :func:`dashboard_command`.

    Examples
    --------
    >>> serve_dashboard("runs/demo", port=8502)  # doctest: +SKIP
    """
    config = load_config(DashboardConfig, config, **overrides)
    command = dashboard_command(run_dir, config)
    print(f"dashboard of {RunDir(run_dir).path}: {dashboard_url(config)} (Ctrl+C stops it)",
          flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
