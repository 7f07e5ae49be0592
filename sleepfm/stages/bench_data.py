"""The labelled epochs of ``sleepfm bench``: per-epoch targets of every task, the fixed split, and
the epoch embeddings of a backbone under each missing-lead condition (cached in the run)."""
from __future__ import annotations

import logging
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..artifacts import load_encoder
from ..checkpoint import artifact_id
from ..exceptions import InvalidParameterError, LabelError
from ..io.labels import events_to_epochs, match_length, read_events, read_stages
from ..channels import LEAD_CONDITIONS
from ..lead_epochs import kept_leads, n_epochs, read_lead_epochs, record_leads
from ..eval.bench_report import score_epochs
from ..rundir import RunDir
from ..splits import few_shot, few_shot_epochs, label_fraction, make_split
from ..utils import atomic_path, fingerprint, progress_bar, sha256_file, write_json_atomic
from ..vocab import group_stages

logger = logging.getLogger(__name__)

#: Tasks of the benchmark and their classes: 5 AASM stages, OSF's 4 (W, light, deep, REM), and
#: per-epoch presence of an arousal, a hypopnea or a desaturation.
BENCH_TASKS: dict[str, int] = {"stage5": 5, "stage4": 4, "arousal": 2, "hypopnea": 2,
                               "desaturation": 2}
#: What ``--tasks stage`` stands for.
TASK_ALIASES: dict[str, tuple[str, ...]] = {"stage": ("stage5", "stage4")}


def expand_tasks(names) -> tuple[str, ...]:
    """Task names with aliases expanded, in :data:`BENCH_TASKS` order."""
    wanted = set()
    for name in names:
        wanted.update(TASK_ALIASES.get(name, (name,)))
    unknown = sorted(wanted - set(BENCH_TASKS))
    if unknown:
        raise InvalidParameterError(f"unknown benchmark task(s) {unknown}; tasks are "
                         f"{', '.join(list(TASK_ALIASES) + list(BENCH_TASKS))}.")
    return tuple(t for t in BENCH_TASKS if t in wanted)


@dataclass
class BenchData:
    """Every labelled record of a run, its per-epoch targets and the benchmark's split.

    Attributes
    ----------
    record_ids, subjects : list of str
    labels : dict
        ``{task: [per-record int array, one entry per whole 30 s epoch; -1 = no label]}``.
    split : dict
        ``train``, ``val``, ``test`` (held-out subjects of the training sites), ``new_site``
        (every record of ``test_site``, empty without one) and ``pretrain`` (train + val:
        pre-training never sees a test night).
    inputs : dict
        ``{record_id: fingerprint}`` of each record's store data and label files.
    notes : list of str
        What was left out and why (e.g. records without event labels).
    """

    record_ids: list[str]
    subjects: list[str]
    labels: dict[str, list[np.ndarray]]
    split: dict
    inputs: dict
    notes: list[str] = field(default_factory=list)

    def index(self, part: str) -> list[int]:
        """Positions of the records of split part ``part``."""
        pos = {r: i for i, r in enumerate(self.record_ids)}
        return [pos[r] for r in self.split[part]]


def _targets(run: RunDir, rid: str, n: int, tasks, notes: list[str]) -> dict[str, np.ndarray]:
    path = run.stage_labels(rid)
    if not path.is_file():
        raise LabelError(f"{rid}: no stage label file ({path}); the benchmark needs scored nights.")
    stages = match_length(read_stages(path).stages.astype(np.int64), n, record=rid,
                          what=f"label file {path.name}")
    out = {}
    events = read_events(run.event_labels(rid)) if run.event_labels(rid).is_file() else None
    for task in tasks:
        if task.startswith("stage"):
            out[task] = group_stages(stages, "aasm5" if task == "stage5" else "osf4")
        elif events is None:
            out[task] = np.full(n, -1, dtype=np.int64)
        else:
            y = events_to_epochs(events, n, groups={task: (task,)})[:, 0].astype(np.int64)
            out[task] = np.where(stages >= 0, y, -1)
    if events is None and any(not t.startswith("stage") for t in tasks):
        notes.append(f"{rid}: no event label file; left out of the event tasks")
    return out


def load_bench_data(run: RunDir, tasks, *, test_size: float = 0.3, val_size: float = 0.15,
                    test_site: str | None = None, seed: int = 0) -> BenchData:
    """Targets and split of every stored record with stage labels.

    Raises
    ------
    LabelError
        No labelled record, too few subjects to split, or ``test_site`` unknown.
    """
    store = run.store()
    ids = store.record_ids
    cohort = run.cohort()
    sites = dict(zip(cohort["record_id"], cohort["site"].astype(str))) \
        if cohort is not None and "site" in cohort else {}
    subjects = run.subjects(ids)
    notes: list[str] = []
    labels: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    kept, inputs = [], {}
    for rid in ids:
        reader = store.open(rid)
        n = n_epochs(reader)
        if not run.stage_labels(rid).is_file() or n == 0:
            notes.append(f"{rid}: no stage labels or no whole epoch; left out")
            continue
        for task, y in _targets(run, rid, n, tasks, notes).items():
            labels[task].append(y)
        kept.append(rid)
        files = [run.stage_labels(rid), run.event_labels(rid)]
        inputs[rid] = fingerprint(reader.fingerprint,
                                  [sha256_file(p) if p.is_file() else None for p in files])
    if not kept:
        raise LabelError(f"{run.path}: no stored record has stage labels; the benchmark needs "
                         "scored nights (<record_id>.csv beside the recordings).")
    if test_site is not None and test_site not in set(sites.values()):
        raise LabelError(f"no record is at site {test_site!r} (cohort.csv 'site' column has "
                         f"{sorted(set(sites.values())) or 'no sites'}).")
    home = [r for r in kept if sites.get(r) != test_site or test_site is None]
    split = make_split(home, [subjects[r] for r in home], test_size=test_size,
                       val_size=val_size, seed=seed)
    split["new_site"] = sorted(r for r in kept if test_site is not None and sites.get(r) == test_site)
    both = {subjects[r] for r in split["new_site"]} & {subjects[r] for r in home}
    if both:
        raise LabelError(f"subjects {sorted(both)[:5]} have nights at site {test_site!r} and at "
                         "another; a new-site split keeps each subject at one site.")
    split["pretrain"] = sorted(split["train"] + split["val"])
    split["test_site"] = test_site
    return BenchData(kept, [subjects[r] for r in kept], labels, split, inputs, notes)


def lead_arrays(run: RunDir, record_ids, cache: Path, *, rate: float = 64.0,
                samples: int = 1920, progress: bool = False
                ) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """``{record_id: (epochs [n, 12, samples] float16, lead mask [12], key)}``: every whole epoch
    of each record on the OSF leads at ``rate``, memory-mapped from ``cache/<record_id>.npy``, and
    the fingerprint it was made under.

    A record is read from the store once and kept under the fingerprint of its store data, its
    lead layout and the rate; a cache made from anything else is written again. Every cell of the
    benchmark then reads epochs from these files (fast random access, little memory).
    """
    store, cmap = run.store(), run.channel_map()
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    readers = [store.open(r) for r in record_ids]
    with progress_bar(sum(n_epochs(r) for r in readers), "read epochs", "epoch",
                      progress) as bar:
        for reader in readers:
            layout = record_leads(reader, channel_map=cmap)
            key = fingerprint(reader.fingerprint, layout.describe(), rate, samples)
            path, meta = cache / f"{reader.record_id}.npy", cache / f"{reader.record_id}.json"
            count = n_epochs(reader)
            if not (path.is_file() and meta.is_file()
                    and json.loads(meta.read_text()).get("key") == key):
                with atomic_path(path) as tmp:
                    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                                    shape=(count, len(layout.slots), samples))
                    for first in range(0, count, 64):
                        n = min(64, count - first)
                        arr[first:first + n] = read_lead_epochs(reader, layout, first, n,
                                                                rate=rate, samples=samples)
                        bar.update(n)
                    arr.flush()
                    del arr
                write_json_atomic(meta, {"key": key, "leads": layout.describe()})
            else:
                bar.update(count)
            out[reader.record_id] = (np.load(path, mmap_mode="r"), layout.present, key)
    return out


def epoch_embeddings(encoder_dir: Path, arrays: dict, conditions, cache: Path, *,
                     batch_size: int = 64, device: str = "cpu", progress: bool = False
                     ) -> dict[str, dict[str, np.ndarray]]:
    """``{condition: {record_id: [n_epochs, D]}}``: the epoch embeddings of a ViT-1D encoder
    with the leads of each condition (:data:`~sleepfm.channels.LEAD_CONDITIONS`) masked.

    ``arrays`` comes from :func:`lead_arrays`. Each condition's embeddings are cached in
    ``cache/<condition>.npz`` under the fingerprint of the encoder and the records; one pass over
    the epochs computes every condition that is not cached.
    """
    encoder, record = load_encoder(encoder_dir, device=device)
    ids = list(arrays)
    key = {c: fingerprint(artifact_id(record), c, [arrays[r][2] for r in ids], ids)
           for c in conditions}
    out: dict[str, dict[str, np.ndarray]] = {}
    for c in conditions:
        path = cache / f"{c}.npz"
        if path.is_file():
            with np.load(path) as f:
                if str(f["__key__"]) == key[c]:
                    out[c] = {r: f[r] for r in ids}
    todo = [c for c in conditions if c not in out]
    if not todo:
        return out
    keep = {c: torch.from_numpy(kept_leads(LEAD_CONDITIONS[c])).to(device) for c in todo}
    made = {c: {} for c in todo}
    with torch.inference_mode(), progress_bar(sum(len(arrays[r][0]) for r in ids), "embed",
                                              "epoch", progress) as bar:
        for rid in ids:
            arr, present, _ = arrays[rid]
            mask = torch.from_numpy(present).to(device)
            parts = {c: [] for c in todo}
            for first in range(0, len(arr), batch_size):
                x = torch.from_numpy(np.asarray(arr[first:first + batch_size],
                                                dtype=np.float32)).to(device)
                for c in todo:
                    m = (mask & keep[c]).expand(len(x), -1)
                    parts[c].append(encoder(x, m).float().cpu().numpy())
                bar.update(len(x))
            for c in todo:
                made[c][rid] = np.concatenate(parts[c]) if parts[c] else np.zeros(
                    (0, encoder.embed_dim), np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    for c in todo:
        with atomic_path(cache / f"{c}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, __key__=np.array(key[c]), **made[c])
        out[c] = made[c]
    return out


@dataclass(frozen=True)
class Cell:
    """One unit of benchmark work, kept under ``RUN/bench/cells/<name>.json`` with its key."""

    name: str
    key: str


def cell_path(run: RunDir, cell: Cell) -> Path:
    return run.bench_dir / "cells" / f"{cell.name}.json"


def cached_rows(run: RunDir, cell: Cell, compute) -> list[dict]:
    """The rows of ``cell``: read when made under the same key, else computed and kept."""
    path = cell_path(run, cell)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == cell.key:
            return saved["rows"]
    rows = compute()
    write_json_atomic(path, {"key": cell.key, "rows": rows})
    return rows


def score_row(method: str, setting: str, task: str, labels: str, fraction: float, condition: str,
         split: str, data: BenchData, records: list[str], proba: dict, threshold, cfg,
         note: str = "") -> dict:
    """One scored row from per-record probabilities."""
    pos = {r: i for i, r in enumerate(data.record_ids)}
    y = np.concatenate([data.labels[task][pos[r]] for r in records])
    p = np.concatenate([proba[r] for r in records])
    groups = np.concatenate([[data.subjects[pos[r]]] * len(data.labels[task][pos[r]])
                             for r in records])
    scores = score_epochs(y, p, groups, threshold=threshold, n_boot=cfg.n_boot, seed=cfg.seed)
    return {"method": method, "setting": setting, "task": task, "labels": labels,
            "pretrain_fraction": fraction, "condition": condition, "split": split,
            "n_nights": len(records), **scores, "note": note}


def test_parts(data: BenchData) -> list[tuple[str, list[str]]]:
    """``[(split name, test records)]``: the held-out subjects, and the new site's nights."""
    parts = [("held_out", data.split["test"])]
    if data.split["new_site"]:
        parts.append(("new_site", data.split["new_site"]))
    return parts


def training_labels(data: BenchData, task: str, spec: str, seed: int
                    ) -> tuple[list[int], list[np.ndarray]]:
    """Training records and their labels under a label spec: ``"25%"`` of the training
    subjects, ``"5/class"`` labelled epochs per class, or ``"2 nights"``."""
    train = data.index("train")
    subjects = data.subjects
    y = data.labels[task]
    if spec.endswith("%"):
        keep = label_fraction(train, subjects, float(spec[:-1]) / 100, seed=seed)
        return list(keep), [y[i] for i in keep]
    if spec.endswith("/class"):
        return train, few_shot_epochs([y[i] for i in train], int(spec.split("/")[0]), seed=seed)
    k = min(int(spec.split()[0]), len(train))
    keep = few_shot(train, subjects, k, seed=seed)
    return list(keep), [y[i] for i in keep]


