"""The labelled nights of a task: a run's epoch embeddings (and/or spectral features of its store
records) joined with its stage or event labels."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..exceptions import InvalidParameterError, LabelError, StoreError
from ..io.embeddings import read_embedding_attrs, read_embeddings
from ..io.labels import event_targets, match_length, read_events, read_stages
from ..rundir import RunDir
from ..utils import check_option, fingerprint, sha256_file
from ..vocab import EPOCH_S, EPOCH_TASKS, ahi_from_events, group_stages
from .features import (check_feature_set, common_kinds, record_spectral_features,
                       spectral_fingerprint)

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    """Labelled nights of a run, aligned with their epoch embeddings.

    Attributes
    ----------
    record_ids, subjects : list of str
        One entry per night, sorted by record id.
    X : list of ndarray [n_epochs_i, D]
        The head's input per epoch: epoch embeddings, spectral features, or both side by side
        (embeddings first), as ``features`` says; empty when loaded without either.
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
        result made from inputs that changed since is never used. Spectral features count as
        made from the store record and the feature definitions.
    features : {"embedding", "spectral", "both"}
        What ``X`` holds.
    n_embedding : int
        Columns of ``X`` that are embeddings (the first ones); the rest are spectral features.
    spectral_kinds : tuple of str
        Channel kinds the spectral features describe (empty without them).
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
    features: str = "embedding"
    n_embedding: int = 0
    spectral_kinds: tuple = ()

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

    def select(self, features: str, index=None) -> list[np.ndarray]:
        """The columns of ``X`` a head on ``features`` takes (of the nights at ``index``).

        Raises
        ------
        InvalidParameterError
            ``features`` is not among what was loaded (e.g. spectral of embedding-only data).
        """
        check_feature_set(features)
        if features != self.features and self.features != "both":
            raise InvalidParameterError(f"these nights were loaded with features="
                                        f"{self.features!r}, not {features!r}.")
        nights = self.X if index is None else [self.X[i] for i in index]
        if features == self.features:
            return list(nights)
        cols = slice(0, self.n_embedding) if features == "embedding" else slice(self.n_embedding,
                                                                                None)
        return [x[:, cols] for x in nights]


def _label_files(run: RunDir, rid: str, task: str) -> list:
    return [run.stage_labels(rid)] + ([run.event_labels(rid)] if task == "events" else [])


def input_fingerprint(run: RunDir, rid: str, task: str, source: str) -> str:
    """Fingerprint of one night's inputs: ``source`` (its embeddings' or store record's
    fingerprint) and the checksums of its label files."""
    return fingerprint(source, [sha256_file(p) if p.is_file() else None
                                for p in _label_files(run, rid, task)])


def _source(embedding_fp: str | None, store_fp: str | None, features: str, kinds) -> str:
    """Fingerprint of what a night's ``X`` is made from."""
    if features == "embedding":
        return embedding_fp if embedding_fp is not None else store_fp
    spectral = spectral_fingerprint(store_fp or "", kinds)
    return spectral if features == "spectral" else fingerprint(embedding_fp or "", spectral)


def current_inputs(run, task: str, record_ids, *, with_embeddings: bool = True,
                   features: str = "embedding", spectral_kinds=()) -> dict:
    """``{record_id: fingerprint}`` of the records' inputs as they are now (see
    :attr:`TaskData.inputs`); a record without the embeddings or store record its input needs
    gets ``None``."""
    run = RunDir(run)
    check_feature_set(features)
    use_embeddings = with_embeddings and features != "spectral"
    use_store = features != "embedding" or not with_embeddings
    out = {}
    for rid in record_ids:
        paths = ([run.embedding_file(rid)] if use_embeddings else []) + (
            [run.store_file(rid)] if use_store else [])
        if not all(p.is_file() for p in paths):
            out[rid] = None
            continue
        emb = read_embedding_attrs(run.embedding_file(rid)).get("fingerprint", "") \
            if use_embeddings else None
        store = run.store().open(rid).fingerprint if use_store else None
        out[rid] = input_fingerprint(run, rid, task, _source(emb, store, features,
                                                             spectral_kinds))
    return out


def _labels(run: RunDir, rid: str, n: int, task: str, scheme: str, has: str = "embeddings"):
    """``(y, stages, ahi)`` of one record fitted to ``n`` epochs (``has``: what the record has,
    for the messages)."""
    stage_path = run.stage_labels(rid)
    if not stage_path.is_file():
        raise LabelError(f"{rid}: has {has} but no stage label file ({stage_path}); add "
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
        raise LabelError(f"{rid}: has {has} but no event label file ({ev_path}); add "
                         "<record_id>.events.csv (onset,duration,type) and preprocess again, or "
                         "pass --skip-unlabelled to leave it out.")
    events = read_events(ev_path)
    return event_targets(events, stages), stages, ahi_from_events(events, stages)


def load_task_data(run_dir, task: str, *, embedding: str = "fused", scheme: str = "aasm5",
                   skip_unlabelled: bool = False, record_ids=None,
                   with_embeddings: bool = True, features: str = "embedding",
                   spectral_kinds=None) -> TaskData:
    """Epoch embeddings (and/or spectral features) and labels of every record that has both.

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
        False: no input is loaded (``X`` is empty) unless ``features`` asks for spectral
        features; the records and epoch counts then come from the store.
    features : {"embedding", "spectral", "both"}, default="embedding"
        ``X`` holds the epoch embeddings, spectral features of the store records
        (:func:`sleepfm.spectral.spectral_features`; the records come from the store), or both
        side by side (embeddings first; the embedded records).
    spectral_kinds : sequence of str, optional
        Channel kinds of the spectral features (default: those every record has).

    Returns
    -------
    TaskData

    Raises
    ------
    LabelError
        A record without a label file (naming it and the expected path), or whose labels differ
        from the recording by more than one epoch (naming both lengths).
    StoreError
        No embeddings, an unknown embedding name, embeddings made by different encoders, or no
        store for spectral features.
    ChannelError
        A record lacks a channel kind of ``spectral_kinds``.
    """
    check_option("task", task, EPOCH_TASKS)
    check_feature_set(features)
    run = RunDir(run_dir)
    spectral = features != "embedding"
    with_embeddings = with_embeddings and features != "spectral"
    if spectral and not run.hdf5_dir.is_dir():
        raise StoreError(f"{run.path}: no HDF5 store ({run.hdf5_dir}), and spectral features "
                         f"(features={features!r}) are computed from it; run `sleepfm preprocess "
                         f"INPUT --out {run.path}`, or use features='embedding'.")
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
    if spectral:
        no_record = [r for r in ids if r not in store_ids]
        if no_record:
            raise StoreError(f"{run.hdf5_dir}: records {no_record[:5]} have embeddings but no "
                             "store record to compute spectral features from; preprocess them "
                             "again, or use features='embedding'.")
        kinds = tuple(spectral_kinds) if spectral_kinds is not None else common_kinds(
            store.open(r) for r in ids)
    else:
        kinds = ()
    out = TaskData([], [], [], [], [], [] if task == "events" else None, features=features,
                   spectral_kinds=kinds)
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
            if spectral:
                source = _source(source, store.open(rid).fingerprint, features, kinds)
        else:
            reader = store.open(rid)
            x, made_by = np.zeros((0, 0), np.float32), None
            source = _source(None, reader.fingerprint, features, kinds)
            n = int(reader.duration_s // EPOCH_S)
        try:
            y, stages, night_ahi = _labels(run, rid, n, task, scheme,
                                           "embeddings" if with_embeddings else "a store record")
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
    out.n_embedding = int(out.X[0].shape[1]) if with_embeddings else 0
    if spectral:
        spec = [record_spectral_features(store.open(rid), kinds, n_epochs=len(y))
                for rid, y in zip(out.record_ids, out.stages)]
        out.X = [np.hstack([x, f]) for x, f in zip(out.X, spec)] if with_embeddings else spec
    elif not with_embeddings:
        out.X = []
    if len(encoder_ids) > 1:
        raise StoreError(f"{run.embeddings_dir}: embeddings were made by different encoders "
                         f"({sorted(encoder_ids)}); re-run `sleepfm embed --run {run.path} "
                         "--overwrite`.")
    out.checkpoint_id = encoder_ids.pop() if encoder_ids else ""
    return out
