"""Spectral features of the records of a run's store: the input a head may take beside (or
instead of) the encoder's epoch embeddings.

Per 30 s epoch, :func:`sleepfm.spectral.spectral_features` of the record's EEG, EOG and chin EMG
channels (read from the 128 Hz store). Which kinds a head uses is decided when it is trained
(the kinds every night of the run has) and recorded in the head, so ``evaluate`` and ``predict``
compute exactly the same columns, and a record that lacks one of them is an error naming it.
"""
from __future__ import annotations

import logging
import re

import numpy as np

from ..channels import normalize_name
from ..exceptions import ChannelError, InvalidParameterError, StoreError
from ..io.store import RecordReader
from ..spectral import SPECTRAL_KINDS, SPECTRAL_VERSION, feature_names, spectral_features
from ..utils import check_option, fingerprint
from ..vocab import EPOCH_S

logger = logging.getLogger(__name__)

#: What a head can take: the encoder's epoch embeddings, spectral features, or both side by side.
FEATURE_SETS: tuple[str, ...] = ("embedding", "spectral", "both")

_CHIN = re.compile(r"chin|submental|menton")
_LEG = re.compile(r"leg|tib|plm|^(?:emg)?[lr]at$")


def _channels_by_kind(reader: RecordReader) -> dict[str, list[tuple[str, str]]]:
    """``{kind: [(modality, channel), ...]}`` of the kinds spectral features describe; EMG is
    the chin leads (else non-leg EMG leads): leg EMG says little about sleep stage."""
    out: dict[str, list[tuple[str, str]]] = {}
    for (mod, name), attrs in reader.channel_attrs.items():
        kind = str(attrs.get("kind", "")).lower()
        if kind in SPECTRAL_KINDS:
            out.setdefault(kind, []).append((mod, name))
    emg = out.pop("emg", [])
    chin = [c for c in emg if _CHIN.search(normalize_name(c[1]))]
    other = [c for c in emg if not _LEG.search(normalize_name(c[1]))]
    if chin or other:
        out["emg"] = chin or other
    return out


def spectral_kinds(reader: RecordReader) -> tuple[str, ...]:
    """The kinds of :data:`~sleepfm.spectral.SPECTRAL_KINDS` a store record has channels of."""
    present = _channels_by_kind(reader)
    return tuple(k for k in SPECTRAL_KINDS if k in present)


def record_spectral_features(reader: RecordReader, kinds, *, n_epochs: int | None = None,
                             where: str = "") -> np.ndarray:
    """Spectral features ``[n_epochs, F]`` of one store record (columns as
    :func:`sleepfm.spectral.feature_names` of ``kinds``).

    Parameters
    ----------
    reader : RecordReader
        A record of a run's store.
    kinds : sequence of str
        Channel kinds to describe (the ones a head was trained with).
    n_epochs : int, optional
        Epochs to return (default: the record's whole 30 s epochs).
    where : str, optional
        What needs the features, for errors (default "the head").

    Raises
    ------
    ChannelError
        The record has no channel of one of ``kinds``; the message names the record, the kind
        and the remedy.
    StoreError
        The record holds fewer epochs than asked for.
    """
    kinds = tuple(kinds)
    by_kind = _channels_by_kind(reader)
    missing = [k for k in kinds if k not in by_kind]
    if missing:
        raise ChannelError(
            f"{reader.record_id}: no {'/'.join(k.upper() for k in missing)} channel in its store "
            f"record ({reader.path}), but {where or 'the head'} takes spectral features of "
            f"{', '.join(k.upper() for k in kinds)}; add such a channel (or a --channel-map "
            "alias for it) and preprocess again, or use a head trained without them "
            "(--features embedding).")
    available = int(reader.duration_s // EPOCH_S)
    n = available if n_epochs is None else int(n_epochs)
    if n > available:
        raise StoreError(f"{reader.record_id}: its store record holds {available} whole epochs, "
                         f"{n} asked for; preprocess it again.")
    signals = {}
    for kind in kinds:
        wanted: dict[str, list[str]] = {}
        for mod, name in by_kind[kind]:
            wanted.setdefault(mod, []).append(name)
        block = reader.read(0.0, n * EPOCH_S, channels=wanted)
        signals[kind] = np.concatenate([block[m] for m in wanted])
    values, _ = spectral_features(signals, reader.sample_rate, kinds=kinds, n_epochs=n)
    return values


def spectral_fingerprint(store_fingerprint: str, kinds) -> str:
    """Id of a record's spectral features: its store record and the feature definitions."""
    return fingerprint(store_fingerprint, "spectral", SPECTRAL_VERSION, list(kinds))


def spectral_info(kinds) -> dict:
    """What a head records about its spectral input (``kinds``, ``names``, ``version``)."""
    kinds = list(kinds)
    return {"kinds": kinds, "names": feature_names(kinds), "version": SPECTRAL_VERSION}


def check_feature_set(features: str, *, allow_auto: bool = False) -> None:
    """Raise unless ``features`` is one of :data:`FEATURE_SETS` (or ``auto``)."""
    check_option("features", features, (("auto",) if allow_auto else ()) + FEATURE_SETS)


def common_kinds(readers) -> tuple[str, ...]:
    """The spectral kinds every record has; kinds some records lack are dropped (logged).

    Raises
    ------
    InvalidParameterError
        No kind is common to all records.
    """
    readers = list(readers)
    per = {r.record_id: set(spectral_kinds(r)) for r in readers}
    common = tuple(k for k in SPECTRAL_KINDS if all(k in s for s in per.values()))
    for kind in SPECTRAL_KINDS:
        lacking = sorted(r for r, s in per.items() if kind not in s)
        if lacking and len(lacking) < len(per):
            logger.warning("spectral features leave out %s: records %s have no such channel",
                           kind.upper(), ", ".join(lacking[:5]))
    if not common:
        raise InvalidParameterError(
            f"no EEG, EOG or chin EMG channel is common to the records "
            f"({', '.join(sorted(per)[:5])}); spectral features need one. Use --features "
            "embedding, or check the channel map.")
    return common
