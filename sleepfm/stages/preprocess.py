"""``sleepfm preprocess``: a folder of EDF/BDF recordings → the run's HDF5 store and labels.

Each record is a pure function (EDF, labels, settings) → one HDF5 file, written atomically, so a
folder runs in a process pool (``workers``); one channel is decoded at a time. Records already done
for the same input checksum, label checksums and settings are skipped, so an interrupted run
resumes where it stopped. Bad files are reported with the reason while the batch goes on.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import traceback
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..channels import DEFAULT_CHANNEL_MAP, ChannelAssignment, ChannelMap
from ..config import PreprocessConfig, load_config
from ..exceptions import ChannelError, DataWarning, LabelError, SignalError, SleepFMError
from ..io import labels as L
from ..io.cohort import COHORT_NAME, merge_cohorts, read_cohort, write_cohort
from ..io.edf import Recording, read_edf
from ..io.store import RecordWriter, build_index, file_is_complete
from ..preprocess import preprocess_signal
from ..rundir import RunDir
from ..utils import fingerprint, progress_bar, sha256_file, write_text_atomic
from ..vocab import record_id, stage_code
from .cluster import executor

logger = logging.getLogger(__name__)

EDF_SUFFIXES = (".edf", ".bdf", ".rec")


@dataclass
class RecordResult:
    """Outcome of one record: ``status`` is ``ok``, ``skipped`` (already done) or ``failed``."""

    record_id: str
    source: str
    status: str
    reason: str = ""
    channels: dict = field(default_factory=dict)
    unplaced: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    sha256: str = ""


def channel_map_of(config: PreprocessConfig) -> ChannelMap:
    """The channel map of a config: the built-in table, extended by ``config.channel_map``."""
    return ChannelMap.from_yaml(config.channel_map) if config.channel_map else DEFAULT_CHANNEL_MAP


def open_recording(edf_path, config: PreprocessConfig,
                   channel_map: ChannelMap) -> tuple[Recording, ChannelAssignment, int]:
    """Open an EDF/BDF and place its channels: ``(recording, assignment, samples at the
    store's rate)``; nothing is decoded yet.

    Raises
    ------
    EDFError
        The file cannot be read (see :func:`~sleepfm.io.edf.read_edf`).
    ChannelError
        No channel can be placed in a modality.
    SignalError
        The recording is shorter than one sample at the store's rate.
    """
    edf_path = Path(edf_path)
    rec = read_edf(edf_path, on_truncated=config.on_truncated)
    assignment = channel_map.assign(rec.channel_names)
    if not assignment.placed:
        raise ChannelError(f"{edf_path.name}: no channel could be placed in a modality "
                           f"(channels: {rec.channel_names}); add aliases with --channel-map FILE.")
    n_out = int(np.floor(rec.duration_s * config.sample_rate + 1e-6))
    if n_out <= 0:
        raise SignalError(f"{edf_path.name}: the recording has zero length.")
    return rec, assignment, n_out


def preprocess_channels(rec: Recording, names, config: PreprocessConfig, n_out: int, *,
                        threads: int = 2) -> Iterator[tuple[str, np.ndarray | SignalError]]:
    """Yield ``(name, signal)`` per channel of ``names``, in order: the channel decoded, filtered,
    resampled to ``n_out`` samples and standardised (float32, :func:`preprocess_signal`), or the
    :class:`SignalError` that makes it unusable (flat, non-finite).

    ``threads`` channels are processed at a time (SciPy's filters release the GIL), the next one
    starting as soon as a worker is free; memory holds a few channels, never the night. With one,
    channels are processed in this thread.
    """
    def outcome(name: str) -> np.ndarray | SignalError:
        try:
            return preprocess_signal(rec.get_data(name), rec.sample_rate(name), config,
                                     n_out=n_out, overwrite_x=True)
        except SignalError as err:
            return err

    if threads <= 1:  # in this thread: no second heap arena keeps freed memory resident
        for name in names:
            yield name, outcome(name)
        return
    with ThreadPoolExecutor(threads) as pool:
        flight: deque = deque()
        for name in names:
            # One channel queued beyond the workers, so none waits for a slower one before it.
            flight.append((name, pool.submit(outcome, name)))
            if len(flight) > threads:
                done, fut = flight.popleft()
                yield done, fut.result()
        while flight:
            done, fut = flight.popleft()
            yield done, fut.result()


def preprocess_record(edf_path, run_dir, *, config: PreprocessConfig | None = None,
                      channel_map: ChannelMap | None = None, label_files: dict | None = None,
                      sha256: str | None = None, threads: int = 2) -> RecordResult:
    """Preprocess one EDF/BDF into the run's store (+ labels), atomically.

    Parameters
    ----------
    edf_path : path-like
        The recording.
    run_dir : path-like or RunDir
        Where the record goes (``RUN/hdf5/<record_id>.h5``, ``RUN/labels/``).
    config : PreprocessConfig, optional
    channel_map : ChannelMap, optional
        Default: :func:`channel_map_of` the config.
    label_files : dict, optional
        ``{"stages": path, "events": path}`` (see :func:`sleepfm.io.labels.find_label_files`).
    sha256 : str, optional
        Checksum of the file, when already known.
    threads : int, default=2
        Channels processed at once.

    Returns
    -------
    RecordResult
        Channels the map cannot place are listed in ``unplaced``; channels that are flat or
        otherwise unusable are dropped and listed in ``dropped`` with the reason.

    Raises
    ------
    EDFError, ChannelError, SignalError, LabelError
        With the file named (a record with no usable channel fails);
        :func:`preprocess_directory` turns them into a failed result.
    """
    config = config or PreprocessConfig()
    channel_map = channel_map or channel_map_of(config)
    edf_path = Path(edf_path)
    run = RunDir(run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        rec, assignment, n_out = open_recording(edf_path, config, channel_map)
        result = RecordResult(rec.record_id, str(edf_path), "ok", unplaced=assignment.unplaced,
                              sha256=sha256 or sha256_file(edf_path))
        hyp, events = _load_labels(rec, label_files or {}, config)
        attrs = {"duration_s": n_out / config.sample_rate, "start_time": rec.start_time,
                 "source_file": edf_path.name, "source_sha256": result.sha256,
                 "config": config.key(), "labels_sha256": labels_key(label_files or {}),
                 "fingerprint": fingerprint(result.sha256, config.key()),
                 "sleepfm_version": __version__,
                 "unplaced_channels": assignment.unplaced}
        out_path = run.store_file(rec.record_id)
        with RecordWriter(out_path, rec.record_id, sample_rate=config.sample_rate, n_samples=n_out,
                          dtype=config.dtype, compression=config.compression, attrs=attrs) as w:
            for name, z in preprocess_channels(rec, list(assignment.placed), config, n_out,
                                               threads=threads):
                if isinstance(z, SignalError):
                    result.dropped[name] = str(z)
                    continue
                w.add_channel(assignment.placed[name], name, z,
                              original_sample_rate=rec.sample_rate(name),
                              kind=assignment.kinds[name],
                              unit=rec.units[rec.channel_names.index(name)])
                result.channels.setdefault(assignment.placed[name], []).append(name)
            if not result.channels:
                raise SignalError(f"{edf_path.name}: no usable channel (dropped: {result.dropped}).")
            w.update_attrs(dropped_channels=result.dropped)
            # Labels before the store file is renamed: a record is only "done" with its labels.
            _write_labels(run, rec.record_id, hyp, events)
    result.warnings = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    for message in result.warnings:
        logger.warning(message)
    return result


def _load_labels(rec, label_files: dict, config: PreprocessConfig):
    hyp = events = None
    if "stages" in label_files:
        hyp = L.align_stages(L.read_stages(label_files["stages"]), rec.duration_s,
                             record=rec.record_id, on_mismatch=config.on_label_mismatch)
    elif any(stage_code(a.description) is not None for a in rec.annotations):
        hyp = L.align_stages(L.stages_from_annotations(rec.annotations, source=rec.path.name),
                             rec.duration_s, record=rec.record_id, on_mismatch=config.on_label_mismatch)
    if "events" in label_files:
        events = L.read_events(label_files["events"])
    elif rec.annotations:
        events = L.events_from_annotations(rec.annotations)
    if events is not None:
        events = L.align_events(events, rec.duration_s, record=rec.record_id)
    return hyp, events


def _write_labels(run: RunDir, record: str, hyp, events) -> None:
    if hyp is not None:
        hyp.to_csv(run.stage_labels(record))
    if events is not None:
        L.write_events_csv(run.event_labels(record), events)


def find_recordings(input_dir) -> list[Path]:
    """EDF/BDF files of a folder (recursively), hypnogram-only files left out."""
    root = Path(input_dir)
    if not root.is_dir():
        raise SleepFMError(f"{root}: input folder not found.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EDF_SUFFIXES and p.is_file()
                   and "hypnogram" not in p.name.lower())
    return files


def _die_with_parent(parent: int) -> None:
    """Initializer of the worker processes: a worker is killed when the process that started it
    dies (Linux ``PR_SET_PDEATHSIG``), so a killed run leaves no orphan writing into the store."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their queue closes
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _worker(args) -> RecordResult:
    path, run_dir, config, channel_map, label_files, sha, threads = args
    try:
        return preprocess_record(path, run_dir, config=config, channel_map=channel_map,
                                 label_files=label_files, sha256=sha, threads=threads)
    except SleepFMError as err:
        return RecordResult(record_id(path), str(path), "failed", reason=str(err), sha256=sha)
    except Exception as err:  # an unexpected bug must not stop the batch; keep the trace
        logger.debug(traceback.format_exc())
        return RecordResult(record_id(path), str(path), "failed",
                            reason=f"{Path(path).name}: {type(err).__name__}: {err}", sha256=sha)


def _outcome(future, job) -> RecordResult:
    """The result of a job run in a pool or on a cluster; a job that could not run (its worker
    died, the cluster lost it) is that record's failure."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - reported, and the batch goes on
        path, sha = job[0], job[5]
        return RecordResult(record_id(path), str(path), "failed", sha256=sha, reason=(
            f"{Path(path).name}: its worker was lost ({type(err).__name__}: {err}); run the "
            "same command again to retry it."))


def labels_key(label_files: dict) -> str:
    """Checksums of a record's label files: a changed label file makes the record run again."""
    return json.dumps({k: sha256_file(p) for k, p in sorted(label_files.items())})


def _already_done(path: Path, sha: str, config: PreprocessConfig, label_files: dict) -> bool:
    if not file_is_complete(path):
        return False
    with h5py.File(path, "r") as f:
        attrs = next(iter(f.values())).attrs
        return (attrs.get("source_sha256") == sha and attrs.get("config") == config.key()
                and attrs.get("labels_sha256") == labels_key(label_files))


def check_cohort(cohort, record_ids: list[str], source) -> None:
    """Compare a cohort table's record ids with the recordings' ids.

    No id in common is a :class:`LabelError` (the split would silently become one subject per
    record); ids on one side only are a :class:`DataWarning` naming them.
    """
    known, ids = set(cohort["record_id"]), set(record_ids)
    if not known & ids:
        raise LabelError(f"{source}: none of its record ids ({', '.join(sorted(known)[:3])}, ...) "
                         f"is a recording's ({', '.join(sorted(ids)[:3])}, ...); a record id is "
                         "the file name without its extension and -PSG, case-sensitive. Fix the "
                         "record_id column.")
    if known - ids:
        warnings.warn(f"{source}: {len(known - ids)} record ids match no recording "
                      f"({', '.join(sorted(known - ids)[:5])}); those rows are not used.",
                      DataWarning, stacklevel=3)
    if ids - known:
        warnings.warn(f"{source}: {len(ids - known)} recordings are not in the table "
                      f"({', '.join(sorted(ids - known)[:5])}); each is its own subject.",
                      DataWarning, stacklevel=3)


def _unmatched_label_files(label_dirs, used: set[Path]) -> list[str]:
    patterns = ("*.csv", "*.txt", "*Hypnogram.edf", "*.xml")
    found = {p.resolve() for d in label_dirs for pat in patterns for p in Path(d).glob(pat)
             if p.name != COHORT_NAME}
    return sorted(str(p) for p in found - {u.resolve() for u in used})


@dataclass
class BatchResult:
    """Results of :func:`preprocess_directory`; ``summary`` reads ``N ok, M failed``."""

    results: list[RecordResult]
    unmatched_labels: list[str] = field(default_factory=list)
    #: Records that were up to date before this run, from another recording, labels or settings.
    redone: list[str] = field(default_factory=list)

    @property
    def ok(self) -> list[RecordResult]:
        return [r for r in self.results if r.status in ("ok", "skipped")]

    @property
    def failed(self) -> list[RecordResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def summary(self) -> str:
        skipped = sum(r.status == "skipped" for r in self.results)
        extra = f" ({skipped} already done)" if skipped else ""
        return f"{len(self.ok)} ok{extra}, {len(self.failed)} failed"


def preprocess_directory(input_dir, run_dir, config: PreprocessConfig | str | None = None, *,
                         labels_dir=None, progress: bool = False, **overrides) -> BatchResult:
    """Preprocess every EDF/BDF of ``input_dir`` into ``run_dir``; resumable, bad files reported.

    Parameters
    ----------
    input_dir : path-like
        Folder of recordings (searched recursively; ``*Hypnogram.edf`` files are labels).
    run_dir : path-like or RunDir
        The run directory (created when missing).
    config : PreprocessConfig, dict or YAML path, optional
        Settings; ``**overrides`` replace single fields (e.g. ``workers=2``).
    labels_dir : path-like, optional
        Where label files are looked for first (then beside each recording; see
        :func:`sleepfm.io.labels.find_label_files`).
    progress : bool, default=False
        Show a progress bar.

    Returns
    -------
    BatchResult
        One :class:`RecordResult` per recording; ``summary`` reads ``N ok, M failed``.

    Raises
    ------
    SleepFMError
        The input folder is missing or holds no recording, the run path is a file, or a setting
        is invalid. Bad recordings do not raise: they are failed results, logged as ``FAILED``.

    Notes
    -----
    Records whose output already exists for the same input checksum and settings are skipped. A
    ``cohort.csv`` in ``input_dir`` is checked and copied to the run, merged with the run's rows of
    other records (see :mod:`sleepfm.io.cohort`).
    The index and ``run.json`` are updated at the end.

    Examples
    --------
    >>> batch = preprocess_directory("data_samples", "runs/demo")
    >>> batch.summary
    '6 ok, 0 failed'
    """
    config = load_config(PreprocessConfig, config, **overrides)
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise SleepFMError(f"{labels_dir}: labels folder not found; pass the folder that holds "
                           "the label files, or leave --labels out to use those beside the "
                           "recordings.")
    run = RunDir(run_dir).prepare()
    with run.lock("preprocess"):
        channel_map = channel_map_of(config)
        if config.channel_map:  # kept with the run, so that predict places channels the same way
            write_text_atomic(run.channel_map_file, Path(config.channel_map).read_text())
        files = find_recordings(input_dir)
        if not files:
            raise SleepFMError(f"{input_dir}: no EDF/BDF files found.")
        cohort_path = Path(input_dir) / COHORT_NAME
        cohort = read_cohort(cohort_path) if cohort_path.is_file() else None
        if cohort is not None:
            check_cohort(cohort, [record_id(p) for p in files], cohort_path)
        run.hdf5_dir.mkdir(exist_ok=True)
        results: list[RecordResult] = []
        todo = []
        seen: dict[str, Path] = {}
        used_labels: set[Path] = set()
        redone: list[str] = []  # records done before, but from another file, labels or settings
        threads = 1 if config.workers > 1 or config.scheduler else 2
        for path in files:
            rid = record_id(path)
            sha = sha256_file(path)
            if rid in seen:
                results.append(RecordResult(rid, str(path), "failed", sha256=sha, reason=(
                    f"{path}: record id {rid!r} already used by {seen[rid]}; rename one of them.")))
                continue
            seen[rid] = path
            dirs = [d for d in (labels_dir, path.parent) if d is not None]
            try:
                label_files = L.find_label_files(path, rid, dirs)
            except SleepFMError as err:
                results.append(RecordResult(rid, str(path), "failed", reason=str(err), sha256=sha))
                continue
            used_labels.update(label_files.values())
            if _already_done(run.store_file(rid), sha, config, label_files):
                results.append(RecordResult(rid, str(path), "skipped", sha256=sha))
                continue
            if file_is_complete(run.store_file(rid)):
                redone.append(rid)
            todo.append((path, run.path, config, channel_map, label_files, sha, threads))
        workers = config.workers if len(todo) > 1 else 1
        with progress_bar(len(todo), "preprocess", "rec", progress) as bar, \
                executor(workers, config.scheduler, initializer=_die_with_parent,
                         initargs=(os.getpid(),)) as pool:
            if pool is None:
                for job in todo:
                    results.append(_worker(job))
                    bar.update()
            else:
                jobs = {pool.submit(_worker, job): job for job in todo}
                for fut in as_completed(jobs):
                    results.append(_outcome(fut, jobs[fut]))
                    bar.update()
        for r in results:
            if r.status == "failed":
                logger.error("FAILED %s: %s", r.source, r.reason)
        build_index(run.hdf5_dir)
        if cohort is not None:
            if run.cohort_file.is_file():
                cohort = merge_cohorts(read_cohort(run.cohort_file), cohort)
            write_cohort(cohort, run.cohort_file)
        label_dirs = {Path(labels_dir)} if labels_dir else set()
        label_dirs |= {p.parent for p in files}
        batch = BatchResult(sorted(results, key=lambda r: r.record_id),
                            _unmatched_label_files(label_dirs, used_labels), sorted(redone))
        if redone:
            logger.warning("preprocessed again %d records whose recording, labels or settings "
                           "changed: %s", len(redone), ", ".join(sorted(redone)[:5]))
        for path in batch.unmatched_labels:
            logger.warning("label file matches no recording: %s", path)
        run.record_stage("preprocess", {
            "input_dir": str(input_dir), "labels_dir": str(labels_dir) if labels_dir else None,
            "config": config.to_dict(), "summary": batch.summary,
            "unmatched_labels": batch.unmatched_labels, "redone": batch.redone,
            "records": [asdict(r) for r in batch.results],
        })
        return batch
