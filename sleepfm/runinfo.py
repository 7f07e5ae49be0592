"""``RUN_DIR/run.json``: what each stage ran with (config, inputs, version, time)."""
from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .utils import write_text_atomic


def read_run_json(run_dir) -> dict:
    """The run's record, ``{}`` when no stage has run yet."""
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def update_run_json(run_dir, stage: str, payload: dict) -> dict:
    """Record one stage's run under ``stages[stage]`` (replacing an earlier run of that stage)."""
    info = read_run_json(run_dir)
    info.setdefault("stages", {})[stage] = {
        **payload,
        "sleepfm_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(Path(run_dir) / "run.json", json.dumps(info, indent=2, default=str))
    return info
