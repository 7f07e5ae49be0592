"""30 s epochs of the 12 OSF leads, read from the store at the backbone's rate.

The OSF ViT-1D backbone (:mod:`sleepfm.models.vit1d`) takes one scoring epoch of 12 fixed leads
at 64 Hz, ``[12, 1920]``. This module turns a stored record (any montage, 128 Hz) into that:

- :func:`record_leads` decides which stored channel fills each lead
  (:func:`sleepfm.channels.osf_lead_slots`, stand-ins allowed) and which leads stay empty;
- :func:`read_lead_epochs` reads consecutive epochs with a margin on each side, resamples them
  with a polyphase anti-alias filter (:func:`scipy.signal.resample_poly`) and cuts the epochs, so
  an epoch's samples do not depend on where a read starts;
- :class:`LeadEpochs` is a torch dataset of single epochs (pre-training, probing, fine-tuning),
  :class:`LeadEpochDataModule` its Lightning data module split by subject; :class:`ArrayEpochs`
  serves epochs already read into arrays.

An empty lead is all zeros with ``mask`` False; the backbone ignores what a masked lead holds. A
batch is ``{"x": [B, 12, S] float32, "mask": [B, 12] bool, "record_id": [...], "epoch": [B]}``
(plus ``"y"`` when labels are given). Epoch ``k`` covers ``[30 k, 30 k + 30)`` s from the record
start, as the stage labels do.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import lightning as L
import numpy as np
import torch
from scipy.signal import resample_poly
from torch.utils.data import DataLoader, Dataset

from .channels import (OSF_LEAD_KINDS, OSF_LEADS, ChannelMap, osf_lead_slots,
                       osf_lead_substitutes)
from .data import EpochShuffle
from .exceptions import InvalidParameterError, StoreError
from .io.store import RecordReader, Store
from .splits import train_val_split
from .vocab import EPOCH_S

logger = logging.getLogger(__name__)

#: Seconds read on each side of a span before resampling (the filter's reach is far shorter).
MARGIN_S = 2.0
@dataclass(frozen=True)
class LeadLayout:
    """Which stored channel fills each OSF lead of one record.

    Attributes
    ----------
    slots : tuple of ((modality, channel) or None)
        One entry per lead of :data:`~sleepfm.channels.OSF_LEADS`; None where the record lacks it.
    substitutes : dict
        ``{lead: channel}`` filled by a stand-in (e.g. ``EEG Fpz-Cz`` for C3-A2).
    """

    slots: tuple
    substitutes: dict

    @property
    def present(self) -> np.ndarray:
        """``[12]`` bool: the lead is filled."""
        return np.array([s is not None for s in self.slots])

    def without(self, kinds) -> "LeadLayout":
        """The same layout with every lead of ``kinds`` emptied (a missing-lead condition)."""
        kinds = set(kinds)
        slots = tuple(None if OSF_LEAD_KINDS[lead] in kinds else s
                      for lead, s in zip(OSF_LEADS, self.slots))
        return LeadLayout(slots, {k: v for k, v in self.substitutes.items()
                                  if OSF_LEAD_KINDS[k] not in kinds})

    def describe(self) -> dict[str, str | None]:
        """``{lead: channel or None}``, JSON-able (what an embeddings file records)."""
        return {lead: (s[1] if s else None) for lead, s in zip(OSF_LEADS, self.slots)}


def record_leads(reader: RecordReader, *, channel_map: ChannelMap | None = None,
                 drop_kinds=()) -> LeadLayout:
    """The :class:`LeadLayout` of a stored record (stand-ins allowed, ``drop_kinds`` emptied)."""
    modality = {name: mod for mod, names in reader.channels.items() for name in names}
    names = list(modality)
    slots = osf_lead_slots(names, channel_map=channel_map, substitute=True)
    layout = LeadLayout(tuple((modality[n], n) if n else None for n in slots),
                        osf_lead_substitutes(names, channel_map=channel_map))
    return layout.without(drop_kinds) if drop_kinds else layout


def n_epochs(reader: RecordReader) -> int:
    """Whole 30 s epochs of a record."""
    return int(reader.duration_s // EPOCH_S + 1e-9)


def read_lead_epochs(reader: RecordReader, layout: LeadLayout, first: int, count: int, *,
                     rate: float = 64.0, samples: int | None = None) -> np.ndarray:
    """Epochs ``first .. first + count - 1`` of a record as ``[count, 12, samples]`` float32.

    Parameters
    ----------
    reader : RecordReader
    layout : LeadLayout
        Which channel fills each lead (empty leads are zeros).
    first, count : int
        Epoch range; it must lie within the record's whole epochs.
    rate : float, default=64.0
        Output sampling rate (the store's rate is resampled to it).
    samples : int, optional
        Samples per epoch (default ``30 * rate``).

    Raises
    ------
    StoreError
        The range is outside the record, or the rates have no small rational ratio.
    """
    samples = samples or int(round(EPOCH_S * rate))
    total = n_epochs(reader)
    if not (0 <= first and count >= 1 and first + count <= total):
        raise StoreError(f"{reader.record_id}: epochs {first}..{first + count - 1} are outside "
                         f"its {total} whole epochs.")
    start, stop = first * EPOCH_S, (first + count) * EPOCH_S
    a, b = max(0.0, start - MARGIN_S), min(reader.duration_s, stop + MARGIN_S)
    wanted: dict[str, list[str]] = {}
    for slot in layout.slots:
        if slot is not None:
            wanted.setdefault(slot[0], []).append(slot[1])
    n_in = int(round(b * reader.sample_rate)) - int(round(a * reader.sample_rate))
    span = np.zeros((len(OSF_LEADS), n_in), dtype=np.float32)
    if wanted:
        data = reader.read(a, b, channels=wanted)
        for i, slot in enumerate(layout.slots):
            if slot is not None:
                span[i] = data[slot[0]][wanted[slot[0]].index(slot[1])]
    ratio = Fraction(rate / reader.sample_rate).limit_denominator(1000)
    if abs(float(ratio) - rate / reader.sample_rate) > 1e-9:
        raise StoreError(f"{reader.record_id}: cannot resample {reader.sample_rate:g} Hz to "
                         f"{rate:g} Hz by a small rational factor.")
    if ratio != 1:
        span = resample_poly(span, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)
    offset = int(round((start - a) * rate))
    out = span[:, offset:offset + count * samples]
    if out.shape[1] < count * samples:  # the record ends inside the last sample of the rate
        out = np.pad(out, ((0, 0), (0, count * samples - out.shape[1])))
    return np.ascontiguousarray(out.reshape(len(OSF_LEADS), count, samples).transpose(1, 0, 2))


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


def kept_leads(drop_kinds=()) -> np.ndarray:
    """``[12]`` bool: the OSF leads whose kind is not in ``drop_kinds`` (a lead condition)."""
    drop = set(drop_kinds)
    return np.array([OSF_LEAD_KINDS[lead] not in drop for lead in OSF_LEADS])


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
