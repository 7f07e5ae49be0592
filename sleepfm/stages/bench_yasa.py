"""The YASA rows of ``sleepfm bench``: YASA's shipped staging model, and YASA's features with a
LightGBM retrained on the benchmark's training subjects (:mod:`sleepfm.yasa_baseline`).

Both read the original recordings, found beside where the run was preprocessed from (or in
``--source``) and checked against the checksum each store record keeps; a record whose recording
is missing or changed is left out of these rows and named in their note. YASA reads one EEG, EOG
and EMG lead: conditions without ECG or respiration give it the same input as all leads, and
without EEG it does not apply (a row of NaN saying so).
"""
from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import numpy as np

from ..channels import LEAD_CONDITIONS
from ..eval.bench_report import best_threshold
from ..exceptions import ChannelError, EDFError, SignalError
from ..rundir import RunDir
from ..utils import fingerprint, sha256_file
from ..yasa_baseline import YASA_KINDS, YasaLightGBM, fit_length, yasa_features, yasa_predict_proba
from .bench_data import (BENCH_TASKS, BenchData, Cell, cached_rows, score_row, test_parts,
                         training_labels)

logger = logging.getLogger(__name__)

#: Columns of 4-class staging summed from the 5 AASM stages (W, N1+N2, N3, REM).
_OSF4 = ((0,), (1, 2), (3,), (4,))


def source_recordings(run: RunDir, record_ids, source: str | None
                      ) -> tuple[dict[str, Path], dict[str, str]]:
    """``({record_id: recording}, {record_id: why not found})``: each stored record's original
    file, in ``source`` or the folders the run was preprocessed from, with the checksum the store
    recorded."""
    info = run.stage_info("preprocess")
    folders = [Path(source)] if source else [Path(info["input_dir"])] if info.get("input_dir") \
        else []
    store = run.store()
    found, missing = {}, {}
    for rid in record_ids:
        attrs = store.open(rid).attrs
        name, sha = attrs.get("source_file"), attrs.get("source_sha256")
        candidates = [f / name for f in folders if name and (f / name).is_file()]
        if not candidates:
            missing[rid] = (f"recording {name} not found in {[str(f) for f in folders]}; pass "
                            "--source FOLDER")
        elif sha256_file(candidates[0]) != sha:
            missing[rid] = f"{candidates[0]} changed since it was preprocessed"
        else:
            found[rid] = candidates[0]
    return found, missing


def _excluded(condition: str) -> tuple[str, ...]:
    return tuple(k for k in LEAD_CONDITIONS[condition] if k in YASA_KINDS)


def _nan_row(method, setting, task, labels, condition, split, records, note) -> dict:
    return {"method": method, "setting": setting, "task": task, "labels": labels,
            "pretrain_fraction": float("nan"), "condition": condition, "split": split,
            "n_nights": len(records), "n_epochs": 0, "note": note}


def _shipped(run, data, cfg, tasks, sources) -> list[dict]:
    """YASA's shipped model on the test nights, per condition (staging tasks only)."""
    pos = {r: i for i, r in enumerate(data.record_ids)}
    rows = []
    for split, records in test_parts(data):
        records = [r for r in records if r in sources]
        if not records:
            continue
        for condition in cfg.conditions:
            exclude = _excluded(condition)
            try:
                proba5 = {r: yasa_predict_proba(sources[r], n_epochs=len(data.labels[tasks[0]]
                                                                          [pos[r]]),
                                                channel_map=run.channel_map(),
                                                exclude_kinds=exclude) for r in records}
            except ChannelError as err:
                rows += [_nan_row("yasa", "off-the-shelf", t, "shipped", condition, split,
                                  records, f"not applicable: {err}")
                         for t in tasks if t.startswith("stage")]
                continue
            same = "" if exclude or condition == "all" else "YASA reads no ECG or respiration"
            for task in (t for t in tasks if t.startswith("stage")):
                proba = proba5 if task == "stage5" else {
                    r: np.stack([p[:, list(c)].sum(1) for c in _OSF4], axis=1)
                    for r, p in proba5.items()}
                rows.append(score_row("yasa", "off-the-shelf", task, "shipped", float("nan"),
                                      condition, split, data, records, proba, None, cfg,
                                      note=same))
    return rows


def _retrained(run, data, cfg, tasks, sources) -> list[dict]:
    """YASA's features + LightGBM trained on the training subjects (all leads), scored with the
    features of absent leads blanked (NaN) under each condition."""
    pos = {r: i for i, r in enumerate(data.record_ids)}
    needed = [r for r in data.record_ids if r in sources]
    features = {}
    for rid in needed:
        n = len(data.labels[tasks[0]][pos[rid]])
        try:
            features[rid] = fit_length(yasa_features(sources[rid], channel_map=run.channel_map()),
                                       n, record=rid)
        except (ChannelError, SignalError, EDFError) as err:
            logger.warning("yasa_lgbm: %s left out (%s)", rid, err)
    specs = [f"{f:.0%}" for f in cfg.label_fractions] + (
        [f"{k} night" + ("s" if k > 1 else "") for k in cfg.shot_nights]
        if "fewshot" in cfg.settings else [])
    rows = []
    for task in tasks:
        for spec in specs:
            train, y_train = training_labels(data, task, spec, cfg.seed)
            keep = [(data.record_ids[i], y) for i, y in zip(train, y_train)
                    if data.record_ids[i] in features]
            if not keep or not any(np.any(y >= 0) for _, y in keep):
                continue
            model = YasaLightGBM(n_classes=BENCH_TASKS[task], seed=cfg.seed, n_jobs=1)
            model.fit([features[r] for r, _ in keep], [y for _, y in keep])
            val = [data.record_ids[i] for i in data.index("val") if data.record_ids[i] in features]
            threshold = None
            if BENCH_TASKS[task] == 2:
                threshold = 0.5 if not val else best_threshold(
                    np.concatenate([data.labels[task][pos[r]] for r in val]),
                    np.concatenate(model.predict_proba([features[r] for r in val]))[:, 1])
            for split, records in test_parts(data):
                records = [r for r in records if r in features]
                if not records:
                    continue
                for condition in cfg.conditions:
                    blank = tuple(f"{k}_" for k in _excluded(condition))
                    frames = []
                    for r in records:
                        f = features[r].astype(np.float64)
                        f.loc[:, [c for c in f.columns if c.startswith(blank)]] = np.nan
                        frames.append(f)
                    proba = dict(zip(records, model.predict_proba(frames)))
                    rows.append(score_row("yasa_lgbm", "retrained", task, spec, float("nan"),
                                          condition, split, data, records, proba, threshold, cfg))
    return rows


def yasa_rows(run: RunDir, data: BenchData, cfg, tasks, label_key: str) -> list[dict]:
    """The rows of the YASA baselines named in ``cfg.baselines`` (cached as cells)."""
    wanted = [b for b in ("yasa", "yasa_lgbm") if b in cfg.baselines]
    if not wanted:
        return []
    sources, missing = source_recordings(run, data.record_ids, cfg.source)
    for rid, why in missing.items():
        logger.warning("YASA baselines: %s left out (%s)", rid, why)
    version = importlib.metadata.version("yasa")
    key = fingerprint(label_key, sorted(sources), version, cfg.conditions, cfg.n_boot, cfg.seed,
                      cfg.label_fractions, cfg.shot_nights, cfg.settings)
    rows = []
    if "yasa" in wanted and any(t.startswith("stage") for t in tasks):
        rows += cached_rows(run, Cell("yasa-shipped", key),
                            lambda: _shipped(run, data, cfg, tasks, sources))
    if "yasa_lgbm" in wanted:
        rows += cached_rows(run, Cell("yasa_lgbm-retrained", key),
                            lambda: _retrained(run, data, cfg, tasks, sources))
    if missing:
        note = (f"{len(missing)} record(s) without their original recording left out: "
                f"{'; '.join(f'{r}: {w}' for r, w in list(missing.items())[:3])}")
        rows = [{**r, "note": "; ".join(x for x in (r.get("note"), note) if x)} for r in rows]
    return rows
