"""``sleepfm predict``: stage new recordings with a trained run, streaming from the EDF.

``sleepfm predict EDF --run RUN_DIR --out hyp.csv`` stages one recording;
``sleepfm predict FOLDER --run RUN_DIR --out OUT_DIR`` stages every EDF/BDF of a folder into
``OUT_DIR/<record_id>.csv``, reporting each file that fails and going on. The run's encoder and
staging head (:class:`~sleepfm.stages.staging_model.StagingModel`) stage a recording in one
process: its channels are preprocessed in memory exactly as ``sleepfm preprocess`` would store
them, encoded a modality at a time, and staged; nothing but the CSV is written, and Lightning is
never imported. The output is SleepFM's hypnogram CSV (``Start,Stop,StageName,StageNumber``, one
row per whole 30 s epoch of the recording) plus a probability column per stage.

``--weights DIR`` stages with SleepFM's published encoder and staging head instead (imported by
``sleepfm import-weights sleepfm-clinical``); given a night's age and sex (``--age/--sex``, or a
demographics table for a folder) its published disease head also writes the 1,065 phenotypes'
risks beside the hypnogram (``<record_id>.risks.csv``).
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import PredictConfig, load_config
from ..exceptions import SleepFMError
from ..models.heads.reference import AGE_SCALE, phenotype_risks
from ..utils import progress_bar, write_text_atomic
from ..vocab import record_id
from .disease_data import sex_code
from .preprocess import find_recordings
from .staging_model import StagingModel, published_head

logger = logging.getLogger(__name__)


def _model(run_dir, weights, config: PredictConfig) -> StagingModel:
    if (run_dir is None) == (weights is None):
        raise SleepFMError("give either a run (--run) or imported published weights "
                           "(--weights), not both or neither.")
    options = dict(channel_map=config.channel_map, on_truncated=config.on_truncated,
                   batch_size=config.batch_size, threads=config.threads, device=config.device)
    if weights is not None:
        return StagingModel.from_weights(weights, **options)
    return StagingModel.from_run(run_dir, **options)


def demographics_code(age, sex) -> tuple[float, float]:
    """``(age, sex)`` as the published disease head takes them: age in years times
    :data:`~sleepfm.models.heads.reference.AGE_SCALE`, sex by
    :func:`~sleepfm.stages.disease_data.sex_code` (1 male, 0 female).

    Raises
    ------
    SleepFMError
        An age that is not a number of years in [0, 130], or a sex that is not M/F.
    """
    try:
        years = float(age)
    except (TypeError, ValueError):
        years = float("nan")
    if not 0 <= years <= 130:
        raise SleepFMError(f"age {age!r} is not a number of years (0-130).")
    code = float(sex_code([sex])[0])
    if np.isnan(code):
        raise SleepFMError(f"sex {sex!r} is not one of M/F (male/female).")
    return years * AGE_SCALE, code


def risk_table(net, tokens, age, sex) -> pd.DataFrame:
    """The published disease head's phenotype risks of one night: ``phecode, phenotype,
    log_hazard, rank`` (rank 1 = the highest risk), in the model's output order."""
    risks = phenotype_risks(net, tokens, age=age, sex=sex)
    table = pd.DataFrame({"phecode": list(net.phenotypes), "phenotype":
                          list(net.phenotypes.values()), "log_hazard": risks.round(6)})
    table["rank"] = table["log_hazard"].rank(ascending=False, method="first").astype(int)
    return table


def _risks_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".csv") + ".risks.csv")


def predict(edf_path, run_dir=None, out=None, config: PredictConfig | str | None = None, *,
            weights=None, age=None, sex=None, **overrides) -> pd.DataFrame:
    """Predict the hypnogram of one EDF/BDF with a run's encoder and staging head, or with
    SleepFM's published ones.

    Parameters
    ----------
    edf_path : path-like
        The recording (any montage the channel map places).
    run_dir : path-like or RunDir, optional
        A run with ``heads/staging`` (``sleepfm finetune staging``) and its encoder.
    out : path-like, optional
        CSV to write (atomically). Nothing is written when omitted.
    weights : path-like, optional
        Instead of a run: the output folder of ``sleepfm import-weights sleepfm-clinical``.
    age, sex : optional
        With ``weights``: the subject's age (years) and sex (M/F); the published disease head's
        phenotype risks (:func:`risk_table`) go to ``<out>.risks.csv`` and to
        ``frame.attrs["risks"]``.
    config : PredictConfig, dict or YAML path, optional
        ``probabilities`` (a ``P_<stage>`` column per class), ``on_truncated`` and
        ``channel_map`` (default: the run's preprocessing settings and channel map),
        ``threads`` (channels preprocessed at once), ``batch_size`` and ``device`` of the
        encoder; ``**overrides`` replace single fields.

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
        The recording has no usable channel of what the head takes (the encoder's modalities, or
        a spectral kind: EEG, EOG, chin EMG).
    SleepFMError
        The recording cannot be read or preprocessed (the message says why).

    Notes
    -----
    The stages are those the store path gives (``sleepfm preprocess`` + ``sleepfm embed`` + the
    head): the signals are quantised to the store's type (``dtype``, float16 by default) exactly
    as the store holds them and cut into the windows ``sleepfm embed`` cuts; probabilities differ
    from the store path's by float32 rounding only.

    Examples
    --------
    >>> hyp = predict("data_samples/SYN0001.edf", "runs/demo", "SYN0001.hyp.csv")
    """
    config = load_config(PredictConfig, config, **overrides)
    edf_path = Path(edf_path)
    if not edf_path.is_file():
        raise SleepFMError(f"{edf_path}: recording not found.")
    model = _model(run_dir, weights, config)
    coded = None
    if age is not None or sex is not None:
        if age is None or sex is None:
            raise SleepFMError("give both --age and --sex for the phenotype risks.")
        coded = demographics_code(age, sex)  # a bad value fails before the recording is read
    diagnosis = _diagnosis(weights, config) if coded is not None else None
    frame = _stage(model, diagnosis, edf_path, coded, config.probabilities)
    if out is not None:
        _write(frame, out)
        logger.info("wrote %d epochs to %s", len(frame), out)
    return frame


def _diagnosis(weights, config: PredictConfig):
    """The published disease head, for phenotype risks."""
    if weights is None:
        raise SleepFMError("phenotype risks (--age/--sex, --demographics) need SleepFM's "
                           "published disease head: pass --weights DIR instead of --run.")
    return published_head(Path(weights), "diagnosis", device=config.device)[0]


def _stage(model: StagingModel, diagnosis, path: Path, coded: tuple[float, float] | None,
           probabilities: bool) -> pd.DataFrame:
    """The hypnogram of one recording, with its risks in ``attrs["risks"]`` when the disease
    head and the subject's coded age and sex (:func:`demographics_code`) are given."""
    if diagnosis is None:
        return model.hypnogram(path, probabilities=probabilities)
    tokens = model.night_tokens(path)
    frame = model.frame(model.head.predict_proba(tokens), probabilities=probabilities)
    frame.attrs["risks"] = risk_table(diagnosis, tokens, *coded)
    return frame


def _write(frame: pd.DataFrame, out) -> None:
    write_text_atomic(out, frame.to_csv(index=False))
    if "risks" in frame.attrs:
        write_text_atomic(_risks_path(out), frame.attrs["risks"].to_csv(index=False))


@dataclass
class PredictResult:
    """Outcome of one recording: ``status`` is ``ok`` or ``failed`` (with the ``reason``)."""

    record_id: str
    source: str
    status: str
    reason: str = ""
    out: str = ""
    n_epochs: int = 0


@dataclass
class PredictBatch:
    """Results of :func:`predict_directory`; ``summary`` reads ``N staged, M failed → OUT_DIR``."""

    results: list[PredictResult]
    out_dir: Path

    @property
    def ok(self) -> list[PredictResult]:
        return [r for r in self.results if r.status == "ok"]

    @property
    def failed(self) -> list[PredictResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def summary(self) -> str:
        return f"{len(self.ok)} staged, {len(self.failed)} failed → {self.out_dir}"


def _stage_one(model: StagingModel, diagnosis, path: Path, out: Path, probabilities: bool,
               demographics: dict) -> PredictResult:
    rid = record_id(path)
    try:
        coded = demographics.get(rid)
        if diagnosis is not None and coded is None:
            raise SleepFMError(f"{path.name}: record {rid!r} is not in the demographics table; "
                               "add its age and sex to stage it with its risks.")
        frame = _stage(model, diagnosis, path, coded, probabilities)
    except SleepFMError as err:
        return PredictResult(rid, str(path), "failed", reason=str(err))
    except Exception as err:  # noqa: BLE001 - one file's unexpected failure must not stop the batch
        logger.debug(traceback.format_exc())
        return PredictResult(rid, str(path), "failed",
                             reason=f"{path.name}: {type(err).__name__}: {err}")
    _write(frame, out)
    return PredictResult(rid, str(path), "ok", out=str(out), n_epochs=len(frame))


def predict_directory(input_dir, run_dir=None, out_dir=None,
                      config: PredictConfig | str | None = None, *, weights=None,
                      demographics=None, progress: bool = False, **overrides) -> PredictBatch:
    """Stage every EDF/BDF of a folder: one hypnogram CSV per recording; bad files reported.

    Parameters
    ----------
    input_dir : path-like
        Folder of recordings (searched recursively; ``*Hypnogram.edf`` files are left out).
    run_dir : path-like or RunDir
        As in :func:`predict`.
    out_dir : path-like
        Folder for ``<record_id>.csv`` (created when missing), each written atomically as
        :func:`predict` writes one.
    config : PredictConfig, dict or YAML path, optional
        As in :func:`predict`; ``**overrides`` replace single fields.
    weights : path-like, optional
        As in :func:`predict`.
    demographics : path-like, optional
        With ``weights``: a CSV of ``Study ID`` (the record id), ``age`` (years) and ``gender``
        (or ``sex``; M/F), the reference's demographics table; each record's risks go to
        ``OUT_DIR/<record_id>.risks.csv`` (a record missing from it fails).
    progress : bool, default=False
        Show a progress bar.

    Returns
    -------
    PredictBatch
        One :class:`PredictResult` per recording; ``summary`` reads ``N staged, M failed →
        OUT_DIR``. A recording that cannot be staged is a failed result (logged as ``FAILED``
        with the reason) and the batch goes on.

    Raises
    ------
    SleepFMError
        The input folder is missing or holds no recording, ``out_dir`` is a file, or the run
        cannot stage (no head or encoder: see :func:`predict`).

    Examples
    --------
    >>> batch = predict_directory("data_samples", "runs/demo", "hypnograms")
    >>> batch.summary
    '5 staged, 0 failed → hypnograms'
    """
    config = load_config(PredictConfig, config, **overrides)
    if out_dir is None:
        raise SleepFMError("give the folder the hypnogram CSVs go to (--out).")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SleepFMError(f"{out_dir}: is a file; when the input is a folder, --out is the "
                           "folder the hypnogram CSVs go to.")
    files = find_recordings(input_dir)
    if not files:
        raise SleepFMError(f"{input_dir}: no EDF/BDF files found.")
    model = _model(run_dir, weights, config)
    table = read_demographics(demographics) if demographics is not None else {}
    diagnosis = _diagnosis(weights, config) if demographics is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    results, seen = [], {}
    with progress_bar(len(files), "predict", "rec", progress) as bar:
        for path in files:
            rid = record_id(path)
            if rid in seen:
                result = PredictResult(rid, str(path), "failed", reason=(
                    f"{path}: record id {rid!r} already used by {seen[rid]}; rename one of them."))
            else:
                seen[rid] = path
                result = _stage_one(model, diagnosis, path, out_dir / f"{rid}.csv",
                                    config.probabilities, table)
            if result.status == "failed":
                logger.error("FAILED %s: %s", result.source, result.reason)
            results.append(result)
            bar.update()
    return PredictBatch(results, out_dir)


def read_demographics(path) -> dict[str, tuple[float, float]]:
    """``{record_id: (age, sex)}`` of a demographics CSV (``Study ID`` or ``record_id``, ``age``,
    ``gender`` or ``sex``), each row coded by :func:`demographics_code`.

    Raises
    ------
    SleepFMError
        The file is missing or unreadable, lacks a column, repeats an id, or holds an age or sex
        that cannot be read (the message names the row).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise SleepFMError(f"{path}: cannot read the demographics table ({err}).") from None
    ids = next((c for c in ("Study ID", "record_id") if c in df.columns), None)
    sex = next((c for c in ("gender", "sex") if c in df.columns), None)
    if ids is None or sex is None or "age" not in df.columns:
        raise SleepFMError(f"{path}: needs the columns 'Study ID' (or record_id), age and gender "
                           f"(or sex); it has {list(df.columns)}.")
    if df[ids].duplicated().any():
        raise SleepFMError(f"{path}: ids {sorted(set(df[ids][df[ids].duplicated()]))[:5]} occur "
                           "more than once; keep one row per record.")
    table = {}
    for row, (rid, age, code) in enumerate(zip(df[ids], df["age"], df[sex]), start=2):
        try:
            table[str(rid).strip()] = demographics_code(age, code)
        except SleepFMError as err:
            raise SleepFMError(f"{path}, row {row}: {err}") from None
    return table
