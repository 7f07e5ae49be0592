"""``sleepfm finetune``: a staging or events head on a run's embeddings → ``RUN_DIR/heads/<task>``.

The 30 s epoch embeddings and labels of every record that has both are split by *subject* (the
split is saved in the head artefact as ``split.json`` and reused by ``sleepfm evaluate``); a label
fraction or a few-shot subset of the training subjects is kept; the head is trained and saved as
an artefact (:func:`sleepfm.artifacts.save_heads`).

Modes
-----
``auto``      (the default) staging: the head and input with the best validation macro-F1
              among the ``candidates`` (linear probe, MLP, LSTM) on each available input
              (embeddings, spectral features, both); in a small cohort by cross-validation over
              the training subjects (:mod:`sleepfm.stages.head_select`). Events: the LSTM head.
``lstm``      :class:`~sleepfm.models.heads.StagingHead` (SleepFM's 2-layer LSTM over the night)
              on frozen inputs.
``linear``    :class:`~sleepfm.models.heads.LinearProbe` on frozen inputs.
``mlp``       :class:`~sleepfm.models.heads.MLPHead` on frozen inputs.
``fewshot``   the LSTM head trained on ``shots`` nights (``shot_unit="nights"``) or ``shots``
              labelled epochs per class (``shot_unit="epochs"``).
``finetune``  the whole encoder, unfrozen, from the HDF5 store: encoder → 30 s epoch pooling →
              LSTM over the 10 epochs of each 5-minute window, started from the run's encoder
              (:class:`~sleepfm.train.StagingFinetuneModule`, Lightning). Staging only. The
              fine-tuned encoder is saved inside the head (``heads/staging/encoder/``).

Inputs (``features``): the encoder's epoch embeddings, spectral features of the store records
(:mod:`sleepfm.spectral`; no encoder needed), or both side by side. With ``epochs`` unset a
staging head trains for at least ``min_steps`` optimiser steps.

The events task predicts, per epoch, apnea/hypopnea, arousal and desaturation
(:class:`~sleepfm.models.heads.EventHead`), a sleep/wake probe for the hours of sleep, and per
night the AHI (:class:`~sleepfm.models.heads.AHIRegressor`, events per hour of *predicted* sleep)
and its severity grade.
"""
from __future__ import annotations

import logging
import shutil
import warnings

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from ..artifacts import load_encoder, save_heads
from ..config import FinetuneConfig, load_config
from ..checkpoint import artifact_id
from ..data import EpochShuffle, LabelledWindows
from ..exceptions import ConvergenceWarning, InvalidParameterError, LabelError
from ..models.factory import ConfiguredEncoder
from ..models.heads import (AHIRegressor, EventHead, LinearProbe, WindowStagingNet,
                             balanced_class_weights)
from ..rundir import RunDir
from ..splits import (check_split, few_shot, few_shot_epochs, label_fraction, make_split,
                      read_split, write_split)
from ..train import StagingFinetuneModule
from ..utils import verbose_scope
from ..vocab import EVENT_NAMES, SCHEMES
from .disease import finetune_disease
from .features import common_kinds, spectral_info
from .head_result import FinetuneResult
from .head_select import build_staging_head, select_staging_head
from .resume import AtomicCheckpoint, RNGState, read_metrics, record_settings, resumable
from .task_data import TaskData, current_inputs, load_task_data

logger = logging.getLogger(__name__)


def _head_options(config: FinetuneConfig, keys=("epochs", "lr")) -> dict:
    """The head options the config sets (unset ones keep the head's defaults)."""
    opts = {"seed": config.seed, "device": config.device}
    opts.update({k: getattr(config, k) for k in keys if getattr(config, k)})
    return opts


def _feature_sets(run: RunDir, task: str, config: FinetuneConfig) -> list[str]:
    """The inputs to train on: the one ``config.features`` names, or with ``features="auto"``
    every available one (``mode="auto"``, staging) or the embeddings (else the spectral
    features when the run has no embeddings)."""
    if config.mode == "finetune":
        return ["embedding"]
    if config.features != "auto":
        return [config.features]
    has_emb = run.embeddings_dir.is_dir() and any(run.embeddings_dir.glob("*.h5"))
    has_store = run.hdf5_dir.is_dir() and bool(run.store().record_ids)
    if has_store and (config.mode == "auto" and task == "staging" or not has_emb):
        try:
            common_kinds(run.store())
        except InvalidParameterError as err:
            logger.warning("no spectral features: %s", err)
            has_store = False
    if has_store and not has_emb:
        logger.warning("%s: no embeddings (run `sleepfm embed --run %s` to add them); the head "
                       "takes spectral features of the store alone", run.path, run.path)
    if config.mode == "auto" and task == "staging":
        sets = ["embedding"] * has_emb + ["spectral"] * has_store + ["both"] * (has_emb and
                                                                              has_store)
        return sets or ["embedding"]  # loading says what is missing
    return ["embedding" if has_emb or not has_store else "spectral"]


def _check_encoder_trained(run: RunDir, features: str) -> bool | None:
    """Warn when the head takes embeddings of an encoder whose pre-training did not beat an
    untrained one (what ``sleepfm pretrain`` records); returns that record."""
    beat = run.stage_info("pretrain").get("beat_untrained") if run.run_json.is_file() else None
    if beat is False and features != "spectral":
        warnings.warn(
            f"{run.encoder_dir}: pre-training did not beat an untrained encoder (run.json), so "
            f"the embeddings this head takes (features={features!r}) may be no better than "
            "random; use --mode auto or --features spectral, or pre-train on more nights.",
            ConvergenceWarning, stacklevel=3)
    return beat


def _fit_events(data: TaskData, train: list[int], val: list[int], config: FinetuneConfig):
    """Event head, sleep/wake probe and AHI calibration on the training (+ validation) nights."""
    head = EventHead(events=EVENT_NAMES, arch="mlp" if config.mode in ("linear", "mlp") else "lstm",
                     bidirectional=config.bidirectional,
                     **_head_options(config, ("epochs", "hidden", "lr")))
    X_train = [data.X[i] for i in train]
    X_val = [data.X[i] for i in val] or None
    y_val = [data.y[i] for i in val] or None
    head.fit(X_train, [data.y[i] for i in train], X_val=X_val, y_val=y_val)
    sleep_y = [np.where(data.stages[i] >= 0, (data.stages[i] >= 1).astype(np.int64), -1)
               for i in train]
    sleep = LinearProbe(n_classes=2, seed=config.seed).fit(X_train, sleep_y)
    fit_idx = train + val
    X_fit = [data.X[i] for i in fit_idx]
    asleep = [np.where(p.argmax(1) == 1, 2, 0) for p in sleep.predict_proba(X_fit)]
    ahi_fit = data.ahi[fit_idx]
    ok = np.isfinite(ahi_fit)
    reg = AHIRegressor()
    proba = head.predict_proba(X_fit)
    try:
        reg.fit([p for p, k in zip(proba, ok) if k], ahi_fit[ok],
                stages=[s for s, k in zip(asleep, ok) if k])
    except ValueError:
        # Too few nights to calibrate: the raw expected event rate (slope 1, intercept 0).
        logger.warning("AHI calibration needs >= 2 nights with differing event rates; using the "
                       "raw event rate")
        reg.coef_, reg.n_nights_ = np.array([1.0, 0.0]), int(ok.sum())
    val_score = head.score(X_val, y_val) if X_val is not None else None
    return {"events": head, "sleep": sleep, "ahi": reg}, head.history_, val_score


def _finetune_encoder(run: RunDir, data: TaskData, train: list[int], val: list[int],
                      config: FinetuneConfig, n_classes: int):
    """Fine-tune the run's encoder end to end; returns (net, history).

    The training state is checkpointed at every epoch (``RUN/checkpoints/lightning/
    finetune_staging.ckpt``): run the same command again after a kill and it resumes to the
    result an uninterrupted run gives (:mod:`sleepfm.stages.resume`). Other settings, another
    split or another encoder start again from the encoder.
    """
    encoder, record = load_encoder(run.encoder_dir)
    if not isinstance(encoder, ConfiguredEncoder):
        raise InvalidParameterError(
            f"mode 'finetune' trains a SleepFM encoder (ours or the released one) end to end "
            f"over 5-minute windows; the run's encoder is a {type(encoder).__name__}. Train a "
            "head on its embeddings (--mode auto, linear, mlp or lstm), or compare full fine-tuning of ViT-1D "
            "backbones with `sleepfm bench --settings finetune`.")
    encoder.train()
    cfg = encoder.config
    window_s = cfg.context_tokens * cfg.token_seconds
    store = run.store()
    L.seed_everything(config.seed, workers=True, verbose=False)
    net = WindowStagingNet(encoder, n_classes, hidden=config.hidden or 64,
                           bidirectional=config.bidirectional)

    def windows(idx):
        return LabelledWindows([store.open(data.record_ids[i]) for i in idx],
                               [data.y[i] for i in idx], window_s, cfg.modalities)

    train_set, val_set = windows(train), windows(val)
    if len(train_set) == 0:
        raise LabelError(f"no training record is at least {window_s:g} s long with labels; "
                         "full fine-tuning needs whole 5-minute windows.")
    y_train = np.concatenate([data.y[i] for i in train])
    weight = balanced_class_weights(np.bincount(y_train[y_train >= 0], minlength=n_classes))
    module = StagingFinetuneModule(net, lr=config.lr or 1e-4, class_weight=weight)

    def loader(dataset, shuffle):
        return torch.utils.data.DataLoader(
            dataset, batch_size=config.batch_size, collate_fn=LabelledWindows.collate,
            sampler=EpochShuffle(len(dataset), config.seed) if shuffle else None)

    settings = {"config": config.to_dict(), "encoder": artifact_id(record),
                "train": [data.record_ids[i] for i in train],
                "val": [data.record_ids[i] for i in val]}
    ckpt = run.finetune_checkpoint
    resume = resumable(ckpt, run.finetune_settings, settings)
    log_dir = run.log_dir("finetune_staging")
    if not resume:  # a new run: its own curve only
        ckpt.unlink(missing_ok=True)
        shutil.rmtree(log_dir, ignore_errors=True)
    record_settings(run.finetune_settings, settings)
    trainer = L.Trainer(max_epochs=config.epochs or 3,
                        accelerator="cpu" if config.device == "cpu" else "auto", devices=1,
                        logger=CSVLogger(log_dir.parent, name=log_dir.name),
                        callbacks=[AtomicCheckpoint(dirpath=ckpt.parent, filename=ckpt.stem,
                                                    monitor=None, save_top_k=1, every_n_epochs=1,
                                                    enable_version_counter=False),
                                   RNGState()],
                        enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader(train_set, True),
                val_dataloaders=loader(val_set, False) if len(val_set) else None,
                ckpt_path=str(ckpt) if resume else None, weights_only=True)
    net.eval()
    history = []
    m = read_metrics(log_dir)
    if len(m):
        for epoch, g in m.groupby("epoch"):
            rec = {"epoch": int(epoch)}
            if "train/loss" in g:
                rec["loss"] = float(g["train/loss"].dropna().mean())
            if "val/macro_f1" in g and g["val/macro_f1"].notna().any():
                rec["val_score"] = float(g["val/macro_f1"].dropna().iloc[-1])
            history.append(rec)
    return net, history


def finetune(run_dir, task: str = "staging", config: FinetuneConfig | str | None = None, *,
             split=None, verbose=None, **overrides) -> FinetuneResult:
    """Train a staging or events head on a run's embeddings; save it to ``RUN_DIR/heads/<task>``.

    ``task="disease"`` is :func:`~sleepfm.stages.disease.finetune_disease` (its config is a
    :class:`~sleepfm.config.DiseaseConfig`).

    Parameters
    ----------
    run_dir : path-like or RunDir
        Run directory after ``sleepfm embed`` (after ``pretrain`` for ``mode="finetune"``).
    task : {"staging", "events", "disease"}, default="staging"
    config : FinetuneConfig, dict or YAML path, optional
        Settings; ``**overrides`` replace single fields (e.g. ``mode="linear"``).
    split : dict or path-like, optional
        A split to reuse (e.g. another run's ``split.json``); by default a new subject-level
        split is made from ``config.seed``, ``test_size`` and ``val_size``.
    verbose : bool, str or int, optional
        Logging level for this call.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    LabelError
        Missing or mismatched label files (see :func:`~sleepfm.stages.task_data.load_task_data`),
        too few subjects.
    StoreError
        No embeddings (a head on embeddings), no store (spectral features) or no encoder
        (``finetune`` mode).
    ChannelError
        A record lacks a channel kind the spectral features of the other records describe.
    InvalidParameterError
        Settings that do not fit together or the task.

    Notes
    -----
    With the defaults (``mode="auto"``, ``features="auto"``) a staging head is chosen by
    validation among linear, MLP and LSTM heads on the embeddings, on spectral features of the
    store and on both (``info["selection"]`` holds every candidate's score); a run without
    embeddings gets a head on spectral features alone, so ``preprocess → finetune`` works
    without pre-training.

    Examples
    --------
    >>> result = finetune("runs/demo", "staging")
    >>> result.info["selection"]["chosen"]
    'mlp+spectral'
    >>> result = finetune("runs/demo", "staging", mode="lstm", features="embedding")
    >>> result.directory
    PosixPath('runs/demo/heads/staging')
    """
    if task == "disease":
        return finetune_disease(run_dir, config, split=split, verbose=verbose, **overrides)
    config = load_config(FinetuneConfig, config, **overrides)
    config.validate(task)
    run = RunDir(run_dir)
    with verbose_scope(verbose), run.lock(f"finetune {task}"):
        end_to_end = task == "staging" and config.mode == "finetune"
        feature_sets = _feature_sets(run, task, config)
        loaded = "both" if len(feature_sets) > 1 else feature_sets[0]
        data = load_task_data(run, task, embedding=config.embedding, scheme=config.scheme,
                              skip_unlabelled=config.skip_unlabelled, features=loaded,
                              with_embeddings=not end_to_end or run.embeddings_dir.is_dir())
        if split is None:
            split = make_split(data.record_ids, data.subjects, test_size=config.test_size,
                               val_size=config.val_size, seed=config.seed)
        elif not isinstance(split, dict):
            split = read_split(split)
        used = set(split["train"] + split["val"] + split["test"])
        split = {**split, "subjects": {r: s for r, s in zip(data.record_ids, data.subjects)
                                       if r in used}}
        train, val = data.index(split["train"]), data.index(split["val"])
        data.index(split["test"])
        check_split(split)
        subjects = np.asarray(data.subjects)
        y_train = [data.y[i] for i in train]
        if config.mode == "fewshot" and config.shot_unit == "nights":
            train = list(few_shot(train, subjects, config.shots, seed=config.seed))
            y_train = [data.y[i] for i in train]
        elif config.mode == "fewshot":
            y_train = few_shot_epochs(y_train, config.shots, seed=config.seed)
        elif config.label_fraction < 1.0:
            train = list(label_fraction(train, subjects, config.label_fraction, seed=config.seed))
            y_train = [data.y[i] for i in train]
        n_classes = len(SCHEMES[config.scheme])
        features, selection = feature_sets[0], None
        if end_to_end:
            net, history = _finetune_encoder(run, data, train, val, config, n_classes)
            components = {"window": net}
            val_score = history[-1].get("val_score") if history else None
        elif task == "staging" and config.mode == "auto":
            head, selection, train = select_staging_head(data, train, val, config, n_classes,
                                                         feature_sets)
            features = selection.features
            components = {"staging": head}
            history = head.history_
            # the validation nights' macro-F1, else the cross-validated one
            val_score = (head.score(data.select(features, val), [data.y[i] for i in val]) if val
                         else selection.scores.get(selection.chosen, {}).get("macro_f1"))
        elif task == "staging":
            X_val = data.select(features, val) or None
            y_val = [data.y[i] for i in val] or None
            kind = config.mode if config.mode in ("linear", "mlp") else "lstm"
            head = build_staging_head(kind, config, n_classes, [len(y) for y in y_train])
            head.fit(data.select(features, train), y_train, X_val=X_val, y_val=y_val)
            components = {"staging": head}
            history = head.history_
            val_score = head.score(X_val, y_val) if X_val is not None else None
        else:
            data.X = data.select(features)
            components, history, val_score = _fit_events(data, train, val, config)
        beat_untrained = None if end_to_end else _check_encoder_trained(run, features)
        used = [data.record_ids[i] for i in train + val]  # what the head learnt from
        kinds = list(data.spectral_kinds) if features != "embedding" else []
        if end_to_end:
            inputs = current_inputs(run, task, used, with_embeddings=False)
        elif features == loaded:
            inputs = {r: data.inputs[r] for r in used}
        else:
            inputs = current_inputs(run, task, used, features=features, spectral_kinds=kinds)
        info = {
            "task": task, "mode": config.mode, "scheme": config.scheme,
            "classes": list(SCHEMES[config.scheme]) if task == "staging" else list(EVENT_NAMES),
            "embedding": config.embedding,
            "features": features,
            "spectral": spectral_info(kinds) if kinds else None,
            "n_features": None if end_to_end else int(components.get(
                "staging", components.get("events")).n_features_in_),
            "selection": selection.to_dict() if selection is not None else None,
            "encoder_checkpoint": {"path": str(run.encoder_dir),
                                   "id": data.checkpoint_id if features != "spectral" else ""},
            "encoder_beat_untrained": beat_untrained,
            "config": config.to_dict(),
            "split": {"file": run.split_file(task).name, "seed": split.get("seed"),
                      **{p: len(split[p]) for p in ("train", "val", "test")}},
            "train_records": [data.record_ids[i] for i in train],
            "inputs": inputs,
            "n_train_subjects": len(set(subjects[train])),
            "skipped": data.skipped,
            "training_curve": history,
            "val_score": val_score,
        }
        out_dir = run.head_dir(task)
        save_heads(out_dir, components, info,
                   extra=lambda tmp: write_split(tmp / run.split_file(task).name, split),
                   encoder_metadata={"finetuned_from": str(run.encoder_dir), "task": task})
        if end_to_end:  # trained and saved: nothing left to resume
            run.finetune_checkpoint.unlink(missing_ok=True)
            run.finetune_settings.unlink(missing_ok=True)
        run.record_stage(f"finetune_{task}", {
            "head": str(out_dir), "mode": config.mode, "features": features,
            "config": config.to_dict(), "train_records": info["train_records"],
            "test_records": split["test"], "val_score": val_score, "skipped": data.skipped,
            "selection": None if selection is None else {
                "chosen": selection.chosen, "method": selection.method,
                "folds": selection.folds,
                "macro_f1": {k: v["macro_f1"] for k, v in selection.scores.items()}}})
        logger.info("%s head (%s%s, features %s) saved to %s", task, config.mode,
                    f": {selection.chosen}" if selection else "", features, out_dir)
        return FinetuneResult(task, config.mode, out_dir, components, split, info["train_records"],
                              val_score, info)
