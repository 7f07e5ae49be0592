"""The run directory: one object that knows every path of the layout, ``run.json`` and the ids of
the artefacts in it.

Every stage reads what the previous one wrote and adds its own part::

    RUN/hdf5/<record>.h5, hdf5/index.h5        preprocess   128 Hz store (index links all records)
    RUN/labels/<record>.csv, .events.csv       preprocess   stages (SleepFM CSV) and events
    RUN/cohort.csv                             preprocess   record → subject (+ subject facts)
    RUN/channel_map.yaml                       preprocess   the --channel-map the store was made with
    RUN/outcomes/                              finetune disease: the outcome tables it read (wide)
    RUN/checkpoints/encoder/                   pretrain     the encoder artefact
    RUN/checkpoints/lightning/last.ckpt        pretrain     training state for a resume
    RUN/checkpoints/pretrain_module.json       pretrain     the settings last.ckpt was made with
    RUN/checkpoints/lightning/finetune_staging.ckpt   finetune (end to end), until it completes
    RUN/logs/<stage>/                          pretrain, finetune: loss curves (CSV)
    RUN/embeddings/<record>.h5                 embed        per token / epoch / window / night
    RUN/heads/<task>/                          finetune     the head artefact + split.json
    RUN/reports/<task>/                        evaluate     metrics, predictions, figures
    RUN/demo_cohort/                           demo         the synthetic cohort it generated
    RUN/run.json                               every stage  settings, inputs, version, time

Stages, notebooks and the dashboard reach these files only through :class:`RunDir`. A stage run
before the one it needs fails with a :class:`~sleepfm.exceptions.StoreError` that names the
command to run first.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import shutil
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from ._version import __version__
from .channels import DEFAULT_CHANNEL_MAP, ChannelMap
from .checkpoint import artifact_id, read_record
from .exceptions import StoreError
from .io.cohort import COHORT_NAME, read_cohort
from .io.store import Store
from .utils import atomic_directory, check_option, write_json_atomic
from .vocab import TASKS

#: Report folders: one per task, and the pre-training benchmark's.
REPORTS: tuple[str, ...] = (*TASKS, "bench")

logger = logging.getLogger(__name__)
# Run directories whose lock this process holds (a stage may run inside another, e.g. the demo).
_HELD: dict[Path, int] = {}


class RunDir:
    """A run directory (see the module docstring for its layout).

    Parameters
    ----------
    path : path-like or RunDir
        The directory; it need not exist yet.

    Examples
    --------
    >>> run = RunDir("runs/demo")
    >>> run.store().record_ids[:2], run.encoder_id()
    (['SC4001E0', 'SYN0001'], '3f2a9c1b0d7e4a55')
    """

    def __init__(self, path: str | os.PathLike | RunDir):
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __truediv__(self, other) -> Path:
        return self.path / other

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        stages = ", ".join(self.read_run_json().get("stages", {})) or "nothing run yet"
        return f"<RunDir {self.path} | {stages}>"

    # ---- layout -------------------------------------------------------------------------------
    @property
    def hdf5_dir(self) -> Path:
        return self.path / "hdf5"

    @property
    def labels_dir(self) -> Path:
        return self.path / "labels"

    @property
    def cohort_file(self) -> Path:
        return self.path / COHORT_NAME

    @property
    def demo_cohort_dir(self) -> Path:
        return self.path / "demo_cohort"

    @property
    def outcomes_dir(self) -> Path:
        return self.path / "outcomes"

    @property
    def channel_map_file(self) -> Path:
        return self.path / "channel_map.yaml"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def encoder_dir(self) -> Path:
        return self.checkpoints_dir / "encoder"

    @property
    def lightning_dir(self) -> Path:
        return self.checkpoints_dir / "lightning"

    @property
    def last_checkpoint(self) -> Path:
        return self.lightning_dir / "last.ckpt"

    @property
    def pretrain_settings(self) -> Path:
        return self.checkpoints_dir / "pretrain_module.json"

    @property
    def finetune_checkpoint(self) -> Path:
        return self.lightning_dir / "finetune_staging.ckpt"

    @property
    def finetune_settings(self) -> Path:
        return self.checkpoints_dir / "finetune_staging.json"

    @property
    def embeddings_dir(self) -> Path:
        return self.path / "embeddings"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def store_file(self, record_id: str) -> Path:
        return self.hdf5_dir / f"{record_id}.h5"

    def stage_labels(self, record_id: str) -> Path:
        return self.labels_dir / f"{record_id}.csv"

    def event_labels(self, record_id: str) -> Path:
        return self.labels_dir / f"{record_id}.events.csv"

    def embedding_file(self, record_id: str) -> Path:
        return self.embeddings_dir / f"{record_id}.h5"

    def log_dir(self, stage: str) -> Path:
        return self.path / "logs" / stage

    def head_dir(self, task: str) -> Path:
        check_option("task", task, TASKS)
        return self.path / "heads" / task

    def split_file(self, task: str) -> Path:
        return self.head_dir(task) / "split.json"

    @property
    def bench_dir(self) -> Path:
        """Where ``sleepfm bench`` keeps its cells (encoders, embeddings, results)."""
        return self.path / "bench"

    def report_dir(self, task: str) -> Path:
        check_option("task", task, REPORTS)
        return self.path / "reports" / task

    @contextlib.contextmanager
    def writing_report(self, task: str) -> Iterator[Path]:
        """A temporary directory that replaces ``reports/<task>`` as a whole when the block
        succeeds: no file of an earlier report (a figure, a table not made this time) survives,
        and a failure leaves the earlier report as it was."""
        path = self.report_dir(task)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(path, may_replace=lambda d: (d / "metrics.json").is_file()) as tmp:
            yield tmp

    # ---- one writer at a time ------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, stage: str) -> Iterator[RunDir]:
        """Hold the run's write lock while ``stage`` writes to it.

        A second writer (another process) is refused with a :class:`StoreError` naming the
        holder. The lock is the operating system's (``flock``), so a killed holder releases it.
        Taking it removes what killed runs left behind, and so does releasing it (what workers
        lost during the stage left; see :meth:`remove_stale_temporaries`).
        """
        self.prepare()
        key = self.path.resolve()
        if key in _HELD:  # already ours: a stage inside another one
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                raise StoreError(f"{self.path} is being written by {holder}; wait for it to "
                                 "finish, or use another run directory.") from None
            since = datetime.now().isoformat(timespec="seconds")
            note = f"`sleepfm {stage}` (pid {os.getpid()} on {socket.gethostname()}, since {since})"
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
            _HELD[key] = 1
            removed = self.remove_stale_temporaries()
            if removed:
                logger.info("removed %d temporary files left by killed runs", removed)
            try:
                yield self
            finally:
                del _HELD[key]
                self.remove_stale_temporaries()  # e.g. of a worker lost mid-run
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def remove_stale_temporaries(self) -> int:
        """Delete the temporary files and directories (``*.tmp``) of interrupted writes; returns
        how many. Call it only while holding the lock (nobody else is writing then)."""
        folders = [self.hdf5_dir, self.labels_dir, self.embeddings_dir, self.checkpoints_dir,
                   self.lightning_dir, self.path / "heads", self.path / "reports", self.path]
        folders += [d for parent in (self.path / "heads", self.path / "reports") if parent.is_dir()
                    for d in parent.iterdir() if d.is_dir()]
        n = 0
        for folder in folders:
            for p in folder.glob("*.tmp") if folder.is_dir() else ():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                n += 1
        return n

    # ---- what the stages made -------------------------------------------------------------------
    def prepare(self) -> RunDir:
        """Create the directory; a path that is a file is an error naming the remedy."""
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path} is a file; pass a directory for the run (it is created "
                             "when missing).")
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def store(self) -> Store:
        """The preprocessed records."""
        if not self.hdf5_dir.is_dir():
            raise StoreError(f"{self.path}: no HDF5 store; run `sleepfm preprocess INPUT --out "
                             f"{self.path}` first.")
        return Store(self.hdf5_dir)

    def embedded_records(self) -> list[str]:
        """Record ids with an embeddings file, sorted."""
        files = sorted(self.embeddings_dir.glob("*.h5")) if self.embeddings_dir.is_dir() else []
        if not files:
            raise StoreError(f"{self.embeddings_dir}: no embeddings; run `sleepfm embed --run "
                             f"{self.path}` first.")
        return [p.stem for p in files]

    def channel_map(self) -> ChannelMap:
        """The alias table the store was made with (``channel_map.yaml``, else the built-in one)."""
        if self.channel_map_file.is_file():
            return ChannelMap.from_yaml(self.channel_map_file)
        return DEFAULT_CHANNEL_MAP

    def cohort(self):
        """The run's ``cohort.csv`` as a DataFrame, or None when there is none."""
        return read_cohort(self.cohort_file) if self.cohort_file.is_file() else None

    def subjects(self, record_ids) -> dict[str, str]:
        """``{record_id: subject_id}`` from ``cohort.csv`` (a record it lacks is its own subject)."""
        table = self.cohort()
        known = dict(zip(table["record_id"], table["subject_id"])) if table is not None else {}
        return {r: str(known.get(r, r)) for r in record_ids}

    def encoder_record(self, directory=None) -> dict:
        """The checked ``config.json`` of the run's encoder (or of ``directory``)."""
        directory = Path(directory) if directory is not None else self.encoder_dir
        if directory == self.encoder_dir and not directory.is_dir():
            raise StoreError(f"{directory}: no encoder; run `sleepfm pretrain --run {self.path}` "
                             "first.")
        return read_record(directory, kind="encoder")

    def encoder_id(self, directory=None) -> str:
        """Id of the run's encoder (or of the one at ``directory``), from its recorded checksum."""
        return artifact_id(self.encoder_record(directory))

    def head_record(self, task: str) -> dict:
        """The checked ``config.json`` of the head trained for ``task``."""
        directory = self.head_dir(task)
        if not directory.is_dir():
            raise StoreError(f"{directory}: no trained head; run `sleepfm finetune {task} --run "
                             f"{self.path}` first.")
        return read_record(directory, kind="head")

    # ---- run.json -------------------------------------------------------------------------------
    def read_run_json(self) -> dict:
        """What the stages recorded, ``{}`` when no stage has run yet."""
        if not self.run_json.is_file():
            return {}
        try:
            return json.loads(self.run_json.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise StoreError(f"{self.run_json} is not valid JSON; restore it or delete it (each "
                             "stage writes its part again when it runs).") from None

    def stage_info(self, stage: str) -> dict:
        """The entry of one stage in ``run.json`` (``{}`` when it has not run)."""
        return self.read_run_json().get("stages", {}).get(stage, {})

    def record_stage(self, stage: str, payload: dict) -> dict:
        """Record one stage's run under ``stages[stage]`` (replacing an earlier run of it)."""
        info = self.read_run_json()
        info.setdefault("stages", {})[stage] = {
            **payload,
            "sleepfm_version": __version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "command": " ".join(sys.argv),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json_atomic(self.run_json, info)
        return info
