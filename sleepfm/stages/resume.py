"""Training runs that resume to the same result: kill ``pretrain`` (or end-to-end fine-tuning) at
any moment, run the same command again, and the weights and the loss log are those of an
uninterrupted run.

A checkpoint is written atomically at the end of every epoch, with the optimiser, the schedule,
the callbacks' state (best loss, baseline) and the random number generators' state
(:class:`RNGState`); the data order of an epoch depends on the seed and the epoch only
(:class:`sleepfm.data.EpochShuffle`); the loss log is flushed with each checkpoint, and the
versions a resumed run adds replace the steps they redo (:func:`read_metrics`).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from ..exceptions import StoreError
from ..utils import to_jsonable, write_json_atomic


class AtomicCheckpoint(ModelCheckpoint):
    """Lightning's checkpoint, written to a temporary file and renamed (a kill while saving leaves
    the previous one intact), after flushing the loss log up to the checkpoint's step."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        for logger in trainer.loggers:
            logger.save()
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class RNGState(Callback):
    """Keeps the random number generators' state in the checkpoint, so dropout after a resume
    draws what it would have drawn without the interruption."""

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def resumable(checkpoint: Path, settings_path: Path, settings: dict) -> bool:
    """Whether ``checkpoint`` continues a run of these ``settings`` (recorded beside it).

    Raises
    ------
    StoreError
        The checkpoint cannot be read without unpickling code (a tampered or foreign file).
    """
    if not checkpoint.is_file():
        return False
    try:
        with warnings.catch_warnings():  # torch's own advice is about unpickling; not taken
            warnings.simplefilter("ignore")
            torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file cannot be trusted
        raise StoreError(f"{checkpoint} cannot be read as a training checkpoint without "
                         f"unpickling code ({type(err).__name__}); delete it, or pass --restart "
                         "to start again.") from None
    return settings_path.is_file() and json.loads(settings_path.read_text()) == to_jsonable(settings)


def changed_settings(settings_path: Path, settings: dict) -> list[str]:
    """Names of the settings that differ from those recorded at ``settings_path``."""
    saved, current = json.loads(settings_path.read_text()), to_jsonable(settings)
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def record_settings(settings_path: Path, settings: dict) -> None:
    write_json_atomic(settings_path, settings)


def read_metrics(root) -> pd.DataFrame:
    """The loss log of a training run: every ``version_N/metrics.csv`` under ``root`` (one per
    invocation), oldest first, where the steps a resumed invocation redid replace those of the
    one it resumed (``version`` says which wrote each row). Empty when nothing was logged."""
    files = sorted(Path(root).glob("version_*/metrics.csv"),
                   key=lambda p: int(p.parent.name.split("_")[1]))
    merged: list[pd.DataFrame] = []
    for path in files:
        frame = pd.read_csv(path).assign(version=int(path.parent.name.split("_")[1]))
        if len(frame) and frame["step"].notna().any():
            first = frame["step"].min()
            merged = [m[m["step"] < first] for m in merged]
        merged.append(frame)
    return pd.concat(merged, ignore_index=True) if merged else pd.DataFrame()
