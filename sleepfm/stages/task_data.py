"""The labelled nights of a task: a run's epoch embeddings joined with its stage or event labels."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..exceptions import LabelError, StoreError
from ..io.embeddings import read_embedding_attrs, read_embeddings
from ..io.labels import event_targets, match_length, read_events, read_stages
from ..rundir import RunDir
from ..utils import check_option, fingerprint, sha256_file
from ..vocab import EPOCH_S, EPOCH_TASKS, ahi_from_events, group_stages

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    """Labelled nights of a run, aligned with their epoch embeddings.

    Attributes
    ----------
    record_ids, subjects : list of str
        One entry per night, sorted by record id.
    X : list of ndarray [n_epochs_i, D]
        Epoch embeddings (empty when loaded without embeddings).
    y : list of ndarray
        Stages ``[n_epochs_i]`` (in the chosen scheme) for staging; ``[n_epochs_i, 3]`` event
        targets (:data:`~sleepfm.vocab.EVENT_NAMES`) for events.
    stages : list of ndarray [n_epochs_i]
        AASM stages (both tasks; the events task uses them for the true sleep time).
    ahi : ndarray or None
        True AHI per night (events task, :func:`sleepfm.vocab.ahi_from_events`); NaN for a night
        without sleep.
    skipped : dict
        ``{record_id: reason}`` of records left out (``skip_unlabelled``).
    checkpoint_id : str
        Id of the encoder that made the embeddings.
    inputs : dict
        ``{record_id: fingerprint}`` of what each night's data were made from (its embeddings, or
        its store record without embeddings, and its label files): a head records them, so a
        result made from inputs that changed since is never used.
    """

    record_ids: list[str]
    subjects: list[str]
    X: list[np.ndarray]
    y: list[np.ndarray]
    stages: list[np.ndarray]
    ahi: np.ndarray | None = None
    skipped: dict = field(default_factory=dict)
    checkpoint_id: str = ""
    inputs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.record_ids)

    def __repr__(self) -> str:
        n = sum(len(s) for s in self.stages)
        return (f"<TaskData | {len(self)} nights, {len(set(self.subjects))} subjects, {n} epochs, "
                f"{len(self.skipped)} skipped>")

    def index(self, records) -> list[int]:
        """Positions of ``records``; a record without labelled embeddings is a LabelError."""
        pos = {r: i for i, r in enumerate(self.record_ids)}
        missing = [r for r in records if r not in pos]
        if missing:
            raise LabelError(f"split names records {missing[:5]} that have no labelled embeddings; "
                             "re-run finetune without --split to make a new split.")
        return [pos[r] for r in records]


def _label_files(run: RunDir, rid: str, task: str) -> list:
    return [run.stage_labels(rid)] + ([run.event_labels(rid)] if task == "events" else [])


def input_fingerprint(run: RunDir, rid: str, task: str, source: str) -> str:
    """Fingerprint of one night's inputs: ``source`` (its embeddings' or store record's
    fingerprint) and the checksums of its label files."""
    return fingerprint(source, [sha256_file(p) if p.is_file() else None
                                for p in _label_files(run, rid, task)])


def current_inputs(run, task: str, record_ids, *, with_embeddings: bool = True) -> dict:
    """``{record_id: fingerprint}`` of the records' inputs as they are now (see
    :attr:`TaskData.inputs`); a record without embeddings or store record gets ``None``."""
    run = RunDir(run)
    out = {}
    for rid in record_ids:
        path = run.embedding_file(rid) if with_embeddings else run.store_file(rid)
        if not path.is_file():
            out[rid] = None
            continue
        source = (read_embedding_attrs(path).get("fingerprint", "") if with_embeddings
                  else run.store().open(rid).fingerprint)
        out[rid] = input_fingerprint(run, rid, task, source)
    return out


def _labels(run: RunDir, rid: str, n: int, task: str, scheme: str):
    """``(y, stages, ahi)`` of one record fitted to ``n`` epochs."""
    stage_path = run.stage_labels(rid)
    if not stage_path.is_file():
        raise LabelError(f"{rid}: has embeddings but no stage label file ({stage_path}); add "
                         "<record_id>.csv beside the recording and preprocess again, or pass "
                         "--skip-unlabelled to leave it out.")
    stages = match_length(read_stages(stage_path).stages.astype(np.int64), n, record=rid,
                          what=f"label file {stage_path.name}")
    if not np.any(stages >= 0):
        raise LabelError(f"{rid}: no scored epoch in its labels; every epoch is unscored (-1). "
                         "Pass --skip-unlabelled.")
    if task == "staging":
        return group_stages(stages, scheme), stages, None
    ev_path = run.event_labels(rid)
    if not ev_path.is_file():
        raise LabelError(f"{rid}: has embeddings but no event label file ({ev_path}); add "
                         "<record_id>.events.csv (onset,duration,type) and preprocess again, or "
                         "pass --skip-unlabelled to leave it out.")
    events = read_events(ev_path)
    return event_targets(events, stages), stages, ahi_from_events(events, stages)


def load_task_data(run_dir, task: str, *, embedding: str = "fused", scheme: str = "aasm5",
                   skip_unlabelled: bool = False, record_ids=None,
                   with_embeddings: bool = True) -> TaskData:
    """Epoch embeddings and labels of every record of ``RUN_DIR/embeddings`` that has both.

    Parameters
    ----------
    run_dir : path-like or RunDir
        Run directory after ``sleepfm embed`` (or after ``preprocess`` with
        ``with_embeddings=False``: then the record list and epoch counts come from the store).
    task : {"staging", "events"}
    embedding : str, default="fused"
        ``fused`` or a modality.
    scheme : {"aasm5", "osf4"}, default="aasm5"
    skip_unlabelled : bool, default=False
        Leave out (and report in ``skipped``) records whose labels are missing or do not match,
        instead of raising.
    record_ids : list of str, optional
        Only these records.
    with_embeddings : bool, default=True

    Returns
    -------
    TaskData

    Raises
    ------
    LabelError
        A record without a label file (naming it and the expected path), or whose labels differ
        from the recording by more than one epoch (naming both lengths).
    StoreError
        No embeddings, an unknown embedding name, or embeddings made by different encoders.
    """
    check_option("task", task, EPOCH_TASKS)
    run = RunDir(run_dir)
    store = None if with_embeddings else run.store()
    ids = run.embedded_records() if with_embeddings else store.record_ids
    if record_ids is not None:
        missing = sorted(set(record_ids) - set(ids))
        if missing:
            raise StoreError(f"{run.path}: records {missing[:5]} have no embeddings/store file.")
        ids = [r for r in ids if r in set(record_ids)]
    if with_embeddings and run.hdf5_dir.is_dir():
        store = run.store()
    store_ids = set(store.record_ids) if store is not None else set()
    out = TaskData([], [], [], [], [], [] if task == "events" else None)
    ahis, encoder_ids, stale = [], set(), []
    for rid in ids:
        if with_embeddings:
            path = run.embedding_file(rid)
            x = read_embeddings(path, level="epoch", name=embedding).astype(np.float32)
            attrs = read_embedding_attrs(path)
            made_by, source = str(attrs.get("checkpoint_id", "")), attrs.get("fingerprint", "")
            if rid in store_ids and attrs.get("store_fingerprint") != store.open(rid).fingerprint:
                stale.append(rid)
            n = x.shape[0]
        else:
            reader = store.open(rid)
            x, made_by, source = np.zeros((0, 0), np.float32), None, reader.fingerprint
            n = int(reader.duration_s // EPOCH_S)
        try:
            y, stages, night_ahi = _labels(run, rid, n, task, scheme)
        except LabelError as err:
            if not skip_unlabelled:
                raise
            out.skipped[rid] = str(err)
            logger.warning("SKIPPED %s", err)  # the reason starts with the record id
            continue
        if made_by is not None:
            encoder_ids.add(made_by)
        out.inputs[rid] = input_fingerprint(run, rid, task, source)
        out.record_ids.append(rid)
        out.X.append(x)
        out.y.append(np.asarray(y))
        out.stages.append(stages)
        ahis.append(night_ahi)
    if stale:
        raise StoreError(f"{run.embeddings_dir}: the embeddings of {len(stale)} records are "
                         f"older than their store records ({', '.join(stale[:5])}); run `sleepfm "
                         f"embed --run {run.path}` to bring them up to date.")
    if not out.record_ids:
        raise LabelError(f"{run.path}: no record has both embeddings and {task} labels "
                         f"(skipped: {out.skipped}).")
    subjects = run.subjects(out.record_ids)
    out.subjects = [subjects[r] for r in out.record_ids]
    if task == "events":
        out.ahi = np.asarray(ahis, dtype=np.float64)
    if not with_embeddings:
        out.X = []
    if len(encoder_ids) > 1:
        raise StoreError(f"{run.embeddings_dir}: embeddings were made by different encoders "
                         f"({sorted(encoder_ids)}); re-run `sleepfm embed --run {run.path} "
                         "--overwrite`.")
    out.checkpoint_id = encoder_ids.pop() if encoder_ids else ""
    return out
