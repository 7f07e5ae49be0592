"""``sleepfm predict EDF --run RUN_DIR --out hyp.csv``: stage a new recording with a trained run.

The EDF is preprocessed with the run's preprocessing settings (``run.json``) into a temporary run
directory, embedded with the run's encoder (unless the head takes spectral features alone), its
spectral features computed when the head takes them, and staged by the run's staging head. The
output is SleepFM's hypnogram CSV (``Start,Stop,StageName,StageNumber``, one row per whole 30 s
epoch of the recording) plus a probability column per stage.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import load_heads
from ..config import PreprocessConfig, PredictConfig, load_config
from ..exceptions import SleepFMError
from ..io.embeddings import read_embeddings
from ..io.labels import Hypnogram
from ..rundir import RunDir
from ..utils import write_text_atomic
from .embed import embed
from .features import record_spectral_features
from .inference import check_encoder, head_features, head_outputs, spectral_kinds
from .preprocess import preprocess_record

logger = logging.getLogger(__name__)


def _preprocess_config(run: RunDir, config: PredictConfig) -> PreprocessConfig:
    """The run's preprocessing settings and channel map, with the recording's overrides."""
    saved = run.stage_info("preprocess").get("config")
    if saved is None:
        logger.warning("%s has no preprocessing config; using the defaults", run.run_json)
        saved = {}
    known = {f.name for f in fields(PreprocessConfig)}
    settings = {k: v for k, v in saved.items() if k in known}
    settings["channel_map"] = config.channel_map or (
        str(run.channel_map_file) if run.channel_map_file.is_file() else None)
    if config.on_truncated is not None:
        settings["on_truncated"] = config.on_truncated
    return load_config(PreprocessConfig, settings)


def predict(edf_path, run_dir, out=None, config: PredictConfig | str | None = None, *,
            work_dir=None, **overrides) -> pd.DataFrame:
    """Predict the hypnogram of one EDF/BDF with a run's encoder and staging head.

    Parameters
    ----------
    edf_path : path-like
        The recording (any montage the channel map places).
    run_dir : path-like or RunDir
        A run with ``checkpoints/encoder`` and ``heads/staging`` (``sleepfm finetune staging``).
    out : path-like, optional
        CSV to write (atomically). Nothing is written when omitted.
    config : PredictConfig, dict or YAML path, optional
        ``keep_work_dir`` (keep the temporary store and embeddings), ``probabilities`` (a
        ``P_<stage>`` column per class), ``on_truncated`` and ``channel_map`` (default: the
        run's preprocessing settings and channel map); ``**overrides`` replace single fields.
    work_dir : path-like, optional
        Where the temporary run directory goes (default: the system's temp dir).

    Returns
    -------
    DataFrame
        ``Start, Stop, StageName, StageNumber`` (+ ``P_<stage>``); one row per whole 30 s epoch.
        With the 5-class AASM scheme the stage numbers are AASM codes 0-4; with ``osf4`` they are
        the OSF classes 0-3 (W, Light, Deep, REM).

    Raises
    ------
    StoreError
        The run lacks an encoder or a staging head, or the head was trained on another encoder.
    ChannelError
        The head takes spectral features of a channel kind (EEG, EOG, chin EMG) the recording
        lacks.
    SleepFMError
        The recording cannot be preprocessed (the message says why).

    Examples
    --------
    >>> hyp = predict("data_samples/SYN0001.edf", "runs/demo", "SYN0001.hyp.csv")
    """
    config = load_config(PredictConfig, config, **overrides)
    edf_path, run = Path(edf_path), RunDir(run_dir)
    if not edf_path.is_file():
        raise SleepFMError(f"{edf_path}: recording not found.")
    run.head_record("staging")
    heads, record = load_heads(run.head_dir("staging"))
    finetuned = record["mode"] == "finetune"
    features, kinds = head_features(record), spectral_kinds(record)
    if not finetuned and features != "spectral":
        check_encoder(record, run.encoder_id(), run.encoder_dir)
    tmp = RunDir(tempfile.mkdtemp(prefix="sleepfm-predict-", dir=work_dir))
    try:
        result = preprocess_record(edf_path, tmp, config=_preprocess_config(run, config))
        rid = result.record_id
        if finetuned:
            outputs = head_outputs(heads, record, store=tmp.store(), record_ids=[rid])
        else:
            parts = []
            if features != "spectral":
                status = embed(tmp, checkpoint=run.encoder_dir)
                if status.get(rid) != "ok":
                    raise SleepFMError(f"{edf_path.name}: could not be embedded: "
                                       f"{status.get(rid)}")
                parts.append(read_embeddings(tmp.embedding_file(rid), name=record["embedding"]))
            if kinds:
                n = len(parts[0]) if parts else None
                parts.append(record_spectral_features(
                    tmp.store().open(rid), kinds, n_epochs=n,
                    where=f"the staging head of {run.path}"))
            outputs = head_outputs(heads, record, X=[np.hstack(parts)])
    finally:
        if config.keep_work_dir:
            logger.info("work directory kept: %s", tmp.path)
        else:
            shutil.rmtree(tmp.path, ignore_errors=True)
    proba = outputs["proba"][0]
    frame = Hypnogram(proba.argmax(1), scheme=record["scheme"]).to_frame()
    if config.probabilities:
        for k, c in enumerate(record["classes"]):
            frame[f"P_{c}"] = proba[:, k].round(4)
    if out is not None:
        write_text_atomic(out, frame.to_csv(index=False))
        logger.info("wrote %d epochs to %s", len(frame), out)
    return frame
