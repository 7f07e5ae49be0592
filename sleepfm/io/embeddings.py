"""Embedding files: ``RUN_DIR/embeddings/<record_id>.h5``, written by ``sleepfm embed``.

A file holds, per modality and ``fused``, one dataset per level::

    token/<name>    [n_tokens, D]    5 s tokens (only with --tokens)
    epoch/<name>    [n_epochs, D]    30 s scoring epochs
    window/<name>   [n_windows, D]   5-minute windows
    night/<name>    [D]              the whole recording

and attributes: ``record_id``, ``modalities`` (present in the record), ``checkpoint`` and
``checkpoint_id`` (the encoder that made them), ``token_s``, ``epoch_s``, ``window_s``,
``windows`` (how windows are made: ``token mean``, or ``attention pool``, the released SleepFM
encoder's own 5-minute embedding) and the encoder's config.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..exceptions import StoreError
from ..utils import atomic_path
from .store import decode_attr, encode_attr

LEVELS: tuple[str, ...] = ("token", "epoch", "window", "night")


def write_embeddings(path, arrays: dict[str, dict[str, np.ndarray]], attrs: dict) -> None:
    """Write ``{level: {name: array}}`` and the file attributes, atomically (float32)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for level, named in arrays.items():
            if level not in LEVELS:
                raise StoreError(f"{path}: unknown embedding level {level!r}; levels are {LEVELS}.")
            for name, arr in named.items():
                f.create_dataset(f"{level}/{name}", data=np.asarray(arr, dtype=np.float32))
        f.attrs.update({k: encode_attr(v) for k, v in attrs.items()})


def read_embeddings(path, *, level: str = "epoch", name: str = "fused") -> np.ndarray:
    """One array of an embeddings file, e.g. the fused 30 s epoch embeddings ``[n_epochs, D]``.

    Raises
    ------
    StoreError
        The file is missing, or lacks ``level/name`` (the message lists what it has).
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no embeddings file; run `sleepfm embed` first.")
    with h5py.File(path, "r") as f:
        key = f"{level}/{name}"
        if key not in f:
            have = sorted(f"{g}/{d}" for g in f for d in f[g])
            raise StoreError(f"{path.name}: no {key!r} embedding; it has {have}. Choose one of "
                             "them (finetune: --embedding NAME).")
        return f[key][()]


def embedding_names(path, *, level: str = "night") -> list[str]:
    """Names of the embeddings a file holds at ``level`` (``fused`` and the modalities the encoder
    embeds apart; a ViT-1D embeds all leads at once, so ``fused`` only)."""
    with h5py.File(path, "r") as f:
        return sorted(f[level]) if level in f else []


def read_embedding_attrs(path) -> dict:
    """The attributes of an embeddings file, JSON values decoded."""
    with h5py.File(path, "r") as f:
        return {k: decode_attr(v) for k, v in f.attrs.items()}
