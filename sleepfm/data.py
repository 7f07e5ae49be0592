"""Torch datasets and the Lightning DataModule over the HDF5 store.

- :class:`WindowDataset` / :class:`WindowDataModule`: whole context windows for pre-training;
- :class:`CoverWindows` with :func:`~sleepfm.windows.plan_windows`: windows covering whole records,
  the last one end-aligned, for embedding and inference;
- :class:`LabelledWindows`: whole windows with their epoch labels, for end-to-end fine-tuning.

A sample is one window (5 minutes by default) of one record: for each modality a float32 array
``[channels, samples]``. :func:`~sleepfm.windows.collate_windows` pads channels to the largest
count in the batch and returns masks, so records of different montages share a batch:

``{"x": {mod: [B, C, T]}, "mask": {mod: [B, C] bool}, "record_id": [...], "start_s": [B]}``

A modality that a record lacks has an all-False mask row; the encoder marks it absent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .channels import MODALITIES
from .exceptions import StoreError
from .io.store import RecordReader, Store
from .splits import train_val_split
from .vocab import EPOCH_S
from .windows import collate_windows, plan_windows

logger = logging.getLogger(__name__)


class WindowDataset(Dataset):
    """Every whole window of every record (records shorter than one window are left out).

    Parameters
    ----------
    readers : list of RecordReader
    window_s : float, default=300
    modalities : sequence of str, default=MODALITIES
    channel_dropout : float, default=0
        Training augmentation: drop each channel with this probability (at least one channel of a
        present modality is kept), so the encoder learns not to depend on a particular lead.
    max_channels : int, optional
        Keep at most this many channels per modality (a random subset when ``channel_dropout`` is
        on, otherwise the first ones).
    seed : int, default=0
    """

    def __init__(self, readers: list[RecordReader], *, window_s: float = 300.0,
                 modalities=MODALITIES, channel_dropout: float = 0.0, max_channels: int | None = None,
                 seed: int = 0):
        self.readers = list(readers)
        self.window_s = float(window_s)
        self.modalities = tuple(modalities)
        self.channel_dropout = float(channel_dropout)
        self.max_channels = max_channels
        self.seed = seed
        self._epoch = 0
        self.index: list[tuple[int, float]] = []
        for i, r in enumerate(self.readers):
            n = int(r.duration_s // self.window_s)
            if n == 0:
                logger.info("%s: %.0f s is shorter than one %.0f s window; left out",
                            r.record_id, r.duration_s, self.window_s)
            self.index += [(i, k * self.window_s) for k in range(n)]

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Vary the channel augmentation from one training epoch to the next."""
        self._epoch = epoch

    def _channels(self, reader: RecordReader, rng: np.random.Generator) -> dict[str, list[str]]:
        out = {}
        for mod in self.modalities:
            names = list(reader.channels.get(mod, []))
            if not names:
                continue
            if self.channel_dropout > 0:
                keep = rng.random(len(names)) >= self.channel_dropout
                keep[rng.integers(len(names))] = True
                names = [n for n, k in zip(names, keep) if k]
                rng.shuffle(names)
            out[mod] = names[: self.max_channels] if self.max_channels else names
        return out

    def __getitem__(self, i: int) -> dict:
        ri, start = self.index[i]
        reader = self.readers[ri]
        rng = np.random.default_rng((self.seed, self._epoch, i))
        data = reader.read(start, start + self.window_s, channels=self._channels(reader, rng))
        return {"x": data, "record_id": reader.record_id, "start_s": start}


class EpochShuffle(Sampler[int]):
    """A random order of ``n`` items that depends only on the seed and the epoch.

    Lightning calls :meth:`set_epoch` at each epoch, so a run resumed from a checkpoint sees every
    epoch in the order an uninterrupted run does.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng((self.seed, self.epoch)).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class WindowDataModule(L.LightningDataModule):
    """Training/validation windows of a store, split by subject.

    Parameters
    ----------
    store : Store
        The preprocessed records.
    subjects : dict, optional
        ``{record_id: subject_id}`` (default: each record is its own subject).
    window_s, batch_size, num_workers, val_fraction, channel_dropout, max_channels, seed
        See :class:`WindowDataset` and :func:`sleepfm.splits.train_val_split`.
    record_ids : list of str, optional
        Restrict to these records (default: all in the store).
    """

    def __init__(self, store: Store, *, subjects: dict[str, str] | None = None,
                 window_s: float = 300.0, batch_size: int = 32, num_workers: int = 0,
                 val_fraction: float = 0.1, channel_dropout: float = 0.0,
                 max_channels: int | None = None, seed: int = 0, record_ids: list[str] | None = None,
                 modalities=MODALITIES):
        super().__init__()
        self.store = store
        self.subjects = subjects
        self.window_s = window_s
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.channel_dropout = channel_dropout
        self.max_channels = max_channels
        self.seed = seed
        self.record_ids = record_ids
        self.modalities = tuple(modalities)

    def setup(self, stage: str | None = None) -> None:
        ids = self.record_ids or self.store.record_ids
        if not ids:
            raise StoreError(f"{self.store.root}: the store holds no records; run "
                             "`sleepfm preprocess`.")
        train_ids, val_ids = train_val_split(ids, val_fraction=self.val_fraction, seed=self.seed,
                                             groups=self.subjects)
        self.train_ids, self.val_ids = train_ids, val_ids
        common = dict(window_s=self.window_s, modalities=self.modalities, max_channels=self.max_channels,
                      seed=self.seed)
        self.train_set = WindowDataset([self.store.open(r) for r in train_ids],
                                       channel_dropout=self.channel_dropout, **common)
        self.val_set = WindowDataset([self.store.open(r) for r in val_ids], **common)
        if len(self.train_set) == 0:
            raise StoreError(f"{self.store.root}: no record is at least {self.window_s:g} s long, "
                             "so there is no training window; use a shorter window_s.")

    def _loader(self, dataset: WindowDataset, shuffle: bool) -> DataLoader:
        # Training drops a last batch too small to hold negatives for a contrastive loss;
        # workers are re-created each epoch so they see the epoch's channel augmentation.
        return DataLoader(dataset, batch_size=self.batch_size,
                          sampler=EpochShuffle(len(dataset), self.seed) if shuffle else None,
                          num_workers=self.num_workers, collate_fn=collate_windows,
                          drop_last=shuffle and len(dataset) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if len(self.val_set) else []


# --------------------------------------------------------------------------------------------
# windows covering whole records (embedding, inference)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoverWindow:
    """One window of :class:`CoverWindows`: which record, where it starts, its first new token."""

    record: int
    start_s: float
    keep_from: int


class CoverWindows(Dataset):
    """Windows that cover every record of ``readers`` (see :func:`plan_windows`), record after
    record.

    Records shorter than a window are one window of their whole-token length. :meth:`batches`
    never puts windows of two records in one batch, so a record's embedding does not depend on
    which records it is embedded with, nor on how records are spread over a cluster. An item
    is a sample of :func:`collate_windows` plus its ``index``.
    """

    def __init__(self, readers: list[RecordReader], *, window_s: float, token_s: float,
                 modalities=MODALITIES):
        self.readers = list(readers)
        self.modalities = tuple(modalities)
        self.lengths, self.windows = [], []
        for k, r in enumerate(self.readers):
            n_tokens = int(r.duration_s // token_s)
            self.lengths.append(min(window_s, n_tokens * token_s))
            self.windows += [CoverWindow(k, s, keep)
                             for s, keep in plan_windows(r.duration_s, window_s, token_s)]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        w = self.windows[i]
        r = self.readers[w.record]
        x = r.read(w.start_s, w.start_s + self.lengths[w.record],
                   modalities=[m for m in self.modalities if m in r.channels])
        return {"x": x, "record_id": r.record_id, "start_s": w.start_s, "index": i}

    def batches(self, batch_size: int) -> list[list[int]]:
        """Batches of at most ``batch_size`` consecutive windows of one record."""
        out, current = [], []
        for i, w in enumerate(self.windows):
            if current and (len(current) == batch_size or
                            w.record != self.windows[current[-1]].record):
                out.append(current)
                current = []
            current.append(i)
        if current:
            out.append(current)
        return out

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        """:func:`collate_windows` keeping each window's ``index``."""
        batch = collate_windows(samples)
        batch["index"] = [s["index"] for s in samples]
        return batch


# --------------------------------------------------------------------------------------------
# labelled windows (end-to-end fine-tuning)
# --------------------------------------------------------------------------------------------
class LabelledWindows(Dataset):
    """Whole windows of records with their epoch labels (windows without a scored epoch are
    left out); items carry ``y`` ``[epochs per window]``."""

    def __init__(self, readers: list[RecordReader], labels: list[np.ndarray], window_s: float,
                 modalities=MODALITIES):
        self.readers, self.labels, self.window_s = readers, labels, window_s
        self.modalities = tuple(modalities)
        self.per = int(round(window_s / EPOCH_S))
        self.index = []
        for i, (r, y) in enumerate(zip(readers, labels)):
            for k in range(int(r.duration_s // window_s)):
                if np.any(y[k * self.per:(k + 1) * self.per] >= 0):
                    self.index.append((i, k))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        ri, k = self.index[i]
        r = self.readers[ri]
        x = r.read(k * self.window_s, (k + 1) * self.window_s,
                   modalities=[m for m in self.modalities if m in r.channels])
        y = self.labels[ri][k * self.per:(k + 1) * self.per]
        return {"x": x, "record_id": r.record_id, "start_s": k * self.window_s,
                "y": torch.as_tensor(np.asarray(y, dtype=np.int64))}

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        """:func:`collate_windows` plus the stacked labels ``y`` ``[B, epochs per window]``."""
        batch = collate_windows(samples)
        batch["y"] = torch.stack([s["y"] for s in samples])
        return batch
