"""Stage a new recording with a trained run: ``sleepfm predict EDF --run RUN_DIR --out hyp.csv``.

The EDF is preprocessed with the run's preprocessing settings (``run.json``) into a temporary run
directory, embedded with the run's encoder, and staged by the run's staging head
(``RUN_DIR/heads/staging``). The output is SleepFM's hypnogram CSV (``Start,Stop,StageName,
StageNumber``, one row per whole 30 s epoch of the recording) plus a probability column per stage.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import SleepFMError, StoreError
from .io.labels import EPOCH_S, Hypnogram
from .runinfo import read_run_json
from .utils import sha256_file, write_text_atomic

logger = logging.getLogger(__name__)


def _preprocess_config(run_dir: Path):
    from .preprocess import PreprocessConfig

    saved = read_run_json(run_dir).get("stages", {}).get("preprocess", {}).get("config")
    if saved is None:
        logger.warning("%s/run.json has no preprocessing config; using the defaults", run_dir)
        return PreprocessConfig()
    known = {f.name for f in fields(PreprocessConfig)}
    return PreprocessConfig(**{k: v for k, v in saved.items() if k in known})


def predict_edf(edf_path, run_dir, out=None, *, work_dir=None, keep_work_dir: bool = False,
                probabilities: bool = True) -> pd.DataFrame:
    """Predict the hypnogram of one EDF/BDF with a run's encoder and staging head.

    Parameters
    ----------
    edf_path : path-like
        The recording (any montage the channel map places).
    run_dir : path-like
        A run with ``checkpoints/encoder`` and ``heads/staging`` (``sleepfm finetune staging``).
    out : path-like, optional
        CSV to write (atomically). Nothing is written when omitted.
    work_dir : path-like, optional
        Where the temporary run directory goes (default: the system's temp dir).
    keep_work_dir : bool, default=False
        Keep the temporary run directory (preprocessed store + embeddings) for inspection.
    probabilities : bool, default=True
        Add a ``P_<stage>`` column per class.

    Returns
    -------
    DataFrame
        ``Start, Stop, StageName, StageNumber`` (+ ``P_<stage>``); one row per whole 30 s epoch.
        With the 5-class AASM scheme the stage numbers are AASM codes 0-4; with ``osf4`` they are
        the OSF classes 0-3 (W, Light, Deep, REM).

    Raises
    ------
    StoreError
        The run lacks an encoder or a staging head.
    SleepFMError
        The recording cannot be preprocessed (the message says why).

    Examples
    --------
    >>> hyp = predict_edf("data_samples/SYN0001.edf", "runs/demo", "SYN0001.hyp.csv")
    """
    from .preprocess import preprocess_record
    from .train.embed import embed_run, read_embeddings
    from .train.finetune import load_head, predict_proba_records

    edf_path, run_dir = Path(edf_path), Path(run_dir)
    if not edf_path.is_file():
        raise SleepFMError(f"{edf_path}: recording not found.")
    heads, info = load_head(run_dir / "heads" / "staging")
    encoder_dir = run_dir / "checkpoints" / "encoder"
    if not (encoder_dir / "config.json").is_file():
        raise StoreError(f"{encoder_dir}: no encoder; run `sleepfm pretrain --run {run_dir}`.")
    config = _preprocess_config(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix="sleepfm-predict-", dir=work_dir))
    try:
        result = preprocess_record(edf_path, tmp, config=config)
        rid = result.record_id
        for message in result.warnings:
            logger.warning(message)
        if info["mode"] == "finetune":
            X = None
            proba = predict_proba_records(tmp, heads, info, [rid])["proba"][0]
        else:
            status = embed_run(tmp, checkpoint=encoder_dir)
            if status.get(rid) != "ok":
                raise SleepFMError(f"{edf_path.name}: could not be embedded: {status.get(rid)}")
            X = read_embeddings(tmp / "embeddings" / f"{rid}.h5", name=info["embedding"])
            expected = info["encoder_checkpoint"].get("id")
            have = sha256_file(encoder_dir / "model.safetensors")[:16]
            if expected and have != expected:
                raise StoreError(
                    f"{run_dir}: the staging head was trained on embeddings of encoder {expected} "
                    f"but checkpoints/encoder is {have}; re-run embed and finetune.")
            proba = predict_proba_records(tmp, heads, info, [rid], X=[X])["proba"][0]
    finally:
        if keep_work_dir:
            logger.info("work directory kept: %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    stages = proba.argmax(1)
    classes = info["classes"]
    if info["scheme"] == "aasm5":
        frame = Hypnogram(stages).to_frame()
    else:
        start = np.arange(len(stages)) * EPOCH_S
        frame = pd.DataFrame({"Start": start, "Stop": start + EPOCH_S,
                              "StageName": [classes[s] for s in stages], "StageNumber": stages})
    if probabilities:
        for k, c in enumerate(classes):
            frame[f"P_{c}"] = proba[:, k].round(4)
    if out is not None:
        write_text_atomic(out, frame.to_csv(index=False))
        logger.info("wrote %d epochs to %s", len(frame), out)
    return frame
