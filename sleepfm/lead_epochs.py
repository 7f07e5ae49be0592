"""30 s epochs of the 12 OSF leads, read from a record at the backbone's rate.

The OSF ViT-1D backbone (:mod:`sleepfm.models.vit1d`) takes one scoring epoch of 12 fixed leads
at 64 Hz, ``[12, 1920]``. This module turns a record (a store record, or anything that reads like
one: any montage, 128 Hz) into that:

- :func:`record_leads` decides which channel fills each lead
  (:func:`sleepfm.channels.osf_lead_slots`, stand-ins allowed) and which leads stay empty;
- :func:`read_lead_epochs` reads consecutive epochs with a margin on each side, resamples them
  with a polyphase anti-alias filter (:func:`scipy.signal.resample_poly`) and cuts the epochs, so
  an epoch's samples do not depend on where a read starts;

An empty lead is all zeros with its mask False; the backbone ignores what a masked lead holds.
Epoch ``k`` covers ``[30 k, 30 k + 30)`` s from the record start, as the stage labels do. The
datasets and the Lightning data module that train on these epochs are in
:mod:`sleepfm.lead_data`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from .channels import (OSF_LEAD_KINDS, OSF_LEADS, ChannelMap, osf_lead_slots,
                       osf_lead_substitutes)
from .exceptions import StoreError
from .io.store import RecordReader
from .vocab import EPOCH_S


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


def kept_leads(drop_kinds=()) -> np.ndarray:
    """``[12]`` bool: the OSF leads whose kind is not in ``drop_kinds`` (a lead condition)."""
    drop = set(drop_kinds)
    return np.array([OSF_LEAD_KINDS[lead] not in drop for lead in OSF_LEADS])

