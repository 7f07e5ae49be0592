"""Torch datasets of 30 s OSF lead epochs and their Lightning data module (pre-training, probing,
fine-tuning a ViT-1D); the epochs themselves are read by :mod:`sleepfm.lead_epochs`.

- :class:`LeadEpochs` serves single epochs read from stored records, :class:`ArrayEpochs` epochs
  already read into arrays;
- :class:`LeadEpochDataModule` splits a store's records by subject for pre-training.

A batch is ``{"x": [B, 12, S] float32, "mask": [B, 12] bool, "record_id": [...], "epoch": [B]}``
(plus ``"y"`` when labels are given); an empty lead is all zeros with ``mask`` False.
"""
from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .channels import ChannelMap
from .data import EpochShuffle
from .exceptions import InvalidParameterError, StoreError
from .io.store import RecordReader, Store
from .lead_epochs import LeadLayout, n_epochs, read_lead_epochs, record_leads
from .splits import train_val_split

logger = logging.getLogger(__name__)


class _Epochs(Dataset):
    """Items ``(record, epoch)`` of ``self.index``; subclasses give each epoch's signals."""

    index: list[tuple[int, int]]
    labels: list[np.ndarray] | None

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Nothing varies between training epochs here; kept for the pre-training loop."""

    def _item(self, ri: int, k: int, x: np.ndarray, mask: np.ndarray, record_id: str) -> dict:
        item = {"x": torch.from_numpy(np.asarray(x, dtype=np.float32)),
                "mask": torch.from_numpy(np.asarray(mask)), "record_id": record_id, "epoch": k}
        if self.labels is not None:
            item["y"] = torch.as_tensor(self.labels[ri][k])
        return item


class LeadEpochs(_Epochs):
    """Single 30 s epochs of the 12 OSF leads from stored records.

    Parameters
    ----------
    readers : list of RecordReader
    layouts : list of LeadLayout
        One per reader (:func:`record_leads`).
    epochs : list of ndarray, optional
        Per reader, the epoch indices to serve (default: every whole epoch).
    labels : list of ndarray, optional
        Per reader, a target per epoch of the record (served as ``y``; -1 = unscored).
    rate : float, default=64.0
        Output sampling rate.
    """

    def __init__(self, readers: list[RecordReader], layouts: list[LeadLayout], *,
                 epochs: list[np.ndarray] | None = None, labels: list[np.ndarray] | None = None,
                 rate: float = 64.0):
        if len(layouts) != len(readers) or (epochs is not None and len(epochs) != len(readers)) \
                or (labels is not None and len(labels) != len(readers)):
            raise InvalidParameterError("readers, layouts, epochs and labels must be as long as "
                                        "each other (one entry per record).")
        self.readers, self.layouts, self.labels, self.rate = list(readers), list(layouts), labels, rate
        self.index: list[tuple[int, int]] = []
        for i, r in enumerate(self.readers):
            chosen = np.arange(n_epochs(r)) if epochs is None else np.asarray(epochs[i], dtype=int)
            self.index += [(i, int(k)) for k in chosen]

    def __getitem__(self, i: int) -> dict:
        ri, k = self.index[i]
        x = read_lead_epochs(self.readers[ri], self.layouts[ri], k, 1, rate=self.rate)[0]
        return self._item(ri, k, x, self.layouts[ri].present, self.readers[ri].record_id)


class ArrayEpochs(_Epochs):
    """Single epochs from per-record arrays ``[n_epochs, 12, samples]`` (in memory or memory-mapped,
    e.g. :func:`sleepfm.stages.bench_data.lead_arrays`), served like :class:`LeadEpochs`.

    Parameters
    ----------
    record_ids : list of str
    arrays : list of ndarray
        Per record, ``[n_epochs, 12, samples]``.
    masks : list of ndarray
        Per record, ``[12]`` bool: the lead is present.
    epochs, labels : list of ndarray, optional
        As :class:`LeadEpochs`.
    """

    def __init__(self, record_ids: list[str], arrays: list[np.ndarray], masks: list[np.ndarray], *,
                 epochs: list[np.ndarray] | None = None, labels: list[np.ndarray] | None = None):
        self.record_ids, self.arrays, self.masks, self.labels = record_ids, arrays, masks, labels
        self.index = [(i, int(k)) for i, a in enumerate(arrays)
                      for k in (np.arange(len(a)) if epochs is None else epochs[i])]

    def __getitem__(self, i: int) -> dict:
        ri, k = self.index[i]
        return self._item(ri, k, self.arrays[ri][k], self.masks[ri], self.record_ids[ri])


def collate_lead_epochs(samples: list[dict]) -> dict:
    """Stack :class:`LeadEpochs` items into a batch (see the module docstring)."""
    batch = {"x": torch.stack([s["x"] for s in samples]),
             "mask": torch.stack([s["mask"] for s in samples]),
             "record_id": [s["record_id"] for s in samples],
             "epoch": torch.tensor([s["epoch"] for s in samples])}
    if "y" in samples[0]:
        batch["y"] = torch.stack([s["y"] for s in samples])
    return batch


def lead_epoch_loader(dataset: LeadEpochs | ArrayEpochs, *, batch_size: int, shuffle: bool = False,
                      seed: int = 0, num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader over :class:`LeadEpochs`; shuffled in an order fixed by seed and epoch."""
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=EpochShuffle(len(dataset), seed) if shuffle else None,
                      num_workers=num_workers, collate_fn=collate_lead_epochs,
                      drop_last=drop_last and len(dataset) > batch_size)


class LeadEpochDataModule(L.LightningDataModule):
    """Training/validation epochs of a store's records for a ViT-1D, split by subject.

    Parameters
    ----------
    store : Store
    subjects : dict, optional
        ``{record_id: subject_id}`` (default: each record is its own subject).
    rate : float, default=64.0
        The backbone's sampling rate.
    batch_size, num_workers, val_fraction, seed
        As :class:`sleepfm.data.WindowDataModule`.
    record_ids : list of str, optional
        Restrict to these records (default: all in the store).
    channel_map : ChannelMap, optional
        The run's alias table, for placing channels on leads.
    arrays : dict, optional
        ``{record_id: (epochs [n, 12, samples], lead mask [12], ...)}`` already read (e.g. by
        :func:`sleepfm.stages.bench_data.lead_arrays`): epochs are served from them
        (:class:`ArrayEpochs`) instead of the store.
    """

    def __init__(self, store: Store, *, subjects: dict[str, str] | None = None,
                 rate: float = 64.0, batch_size: int = 64, num_workers: int = 0,
                 val_fraction: float = 0.1, seed: int = 0, record_ids: list[str] | None = None,
                 channel_map: ChannelMap | None = None, arrays: dict | None = None):
        super().__init__()
        self.store, self.subjects, self.rate = store, subjects, rate
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.seed, self.record_ids = val_fraction, seed, record_ids
        self.channel_map, self.arrays = channel_map, arrays

    def _dataset(self, ids: list[str]) -> LeadEpochs | ArrayEpochs:
        if self.arrays is not None:
            ids = [r for r in ids if self.arrays[r][1].any() and len(self.arrays[r][0])]
            return ArrayEpochs(ids, [self.arrays[r][0] for r in ids],
                               [self.arrays[r][1] for r in ids])
        readers, layouts = [], []
        for rid in ids:
            reader = self.store.open(rid)
            layout = record_leads(reader, channel_map=self.channel_map)
            if not layout.present.any() or n_epochs(reader) == 0:
                logger.info("%s: no OSF lead or no whole epoch; left out of pre-training", rid)
                continue
            readers.append(reader)
            layouts.append(layout)
        return LeadEpochs(readers, layouts, rate=self.rate)

    def setup(self, stage: str | None = None) -> None:
        ids = self.record_ids or self.store.record_ids
        if not ids:
            raise StoreError(f"{self.store.root}: the store holds no records; run "
                             "`sleepfm preprocess`.")
        self.train_ids, self.val_ids = train_val_split(ids, val_fraction=self.val_fraction,
                                                       seed=self.seed, groups=self.subjects)
        self.train_set = self._dataset(self.train_ids)
        self.val_set = self._dataset(self.val_ids)
        if len(self.train_set) == 0:
            raise StoreError(f"{self.store.root}: no training record holds an OSF lead and a "
                             "whole 30 s epoch; see sleepfm.channels.OSF_LEADS.")

    def train_dataloader(self) -> DataLoader:
        return lead_epoch_loader(self.train_set, batch_size=self.batch_size, shuffle=True,
                                 seed=self.seed, num_workers=self.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if not len(self.val_set):
            return []
        return lead_epoch_loader(self.val_set, batch_size=self.batch_size,
                                 num_workers=self.num_workers)
