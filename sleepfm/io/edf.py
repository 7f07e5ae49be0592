"""Read EDF, EDF+ and BDF files, one signal at a time at its native sampling rate.

Why not MNE's reader: ``mne.io.read_raw_edf`` brings every signal of a mixed-rate file to the highest
rate (a 1 Hz SpO2 channel becomes 256 Hz) and holds them in one float64 array, which costs both time
and memory on a full night (``benchmarks/preprocess.py`` measures it). This reader parses the header
itself and maps the data records with NumPy, so a signal is decoded only when asked for, in its own
rate, in physical units.

De-identification: the header's patient field (name, id, sex, birth date) is never parsed or kept;
only the start *time of day* is kept, not the date.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..exceptions import DataWarning, EDFError
from ..utils import check_option, verbose_scope
from ..vocab import record_id

logger = logging.getLogger(__name__)

ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
_TAL = re.compile(rb"([+-]\d+(?:\.\d*)?)(?:\x15(\d+(?:\.\d*)?))?\x14(.*?)\x14\x00", re.S)


@dataclass(frozen=True)
class Annotation:
    """One EDF+ annotation: onset and duration in seconds from the recording start, and its text."""

    onset: float
    duration: float
    description: str


@dataclass
class _Header:
    fmt: str  # "edf" or "bdf"
    variant: str  # "", "EDF+C", "EDF+D", "BDF+C", ...
    header_bytes: int
    n_records: int
    record_duration: float
    labels: list[str]
    units: list[str]
    prefilter: list[str]
    samples_per_record: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    start_time: str


@dataclass
class Recording:
    """An EDF/BDF recording: channel names, native sampling rates, units and lazily read signals.

    Use :func:`read_edf` to create one. ``get_data(name)`` decodes one signal in physical units
    (float32 by default) without touching the others.

    Attributes
    ----------
    record_id : str
        :func:`sleepfm.vocab.record_id` of the file name.
    channel_names, sample_rates, units, prefilter : list
        One entry per data signal (annotation signals excluded).
    duration_s : float
        Number of data records × record duration.
    start_time : str
        Start time of day ``HH:MM:SS`` (the date is not kept).
    annotations : list of Annotation
        EDF+ annotations (empty for plain EDF/BDF).
    """

    path: Path
    record_id: str
    channel_names: list[str]
    sample_rates: list[float]
    units: list[str]
    prefilter: list[str]
    duration_s: float
    start_time: str
    annotations: list[Annotation] = field(default_factory=list)
    _header: _Header | None = field(default=None, repr=False)
    _index: list[int] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        rates = sorted(set(self.sample_rates))
        if not rates:
            rate = "no signals"
        elif len(rates) == 1:
            rate = f"{rates[0]:g} Hz"
        else:
            rate = f"{rates[0]:g}–{rates[-1]:g} Hz"
        return (
            f"<Recording {self.record_id} | {len(self.channel_names)} ch, "
            f"{self.duration_s / 3600:.2f} h, {rate}>"
        )

    def sample_rate(self, name: str) -> float:
        """Native sampling rate of a channel, in Hz."""
        return self.sample_rates[self._position(name)]

    def _position(self, name: str) -> int:
        try:
            return self.channel_names.index(name)
        except ValueError:
            raise KeyError(
                f"{self.path.name}: no channel {name!r}; channels are {self.channel_names}"
            ) from None

    def get_data(self, name: str, *, dtype=np.float32) -> np.ndarray:
        """Decode one channel in physical units at its native rate."""
        h = self._header
        i = self._index[self._position(name)]
        n = int(h.samples_per_record[i])
        out = np.empty(h.n_records * n, dtype=dtype)
        gain, offset = h.gain[i], h.offset[i]
        for r0, block in _signal_blocks(self.path, h, i):
            if h.fmt == "edf":
                digital = block.view("<i2").reshape(-1)
            else:
                b = block.reshape(-1, 3).astype(np.int32)
                digital = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
                digital -= (digital >= 1 << 23) * (1 << 24)
            seg = out[r0 * n:r0 * n + digital.size]
            np.multiply(digital, gain, out=seg, casting="unsafe")
            seg += offset
        return out


def _field(raw: bytes, name: str, path: Path) -> str:
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()


def _number(text: str, name: str, path: Path, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise EDFError(f"{path.name}: header field {name!r} is {text!r}, not a number; "
                       "the file is corrupt or not an EDF/BDF file.") from None


def _read_header(path: Path, on_truncated: str) -> _Header:
    size = path.stat().st_size
    with open(path, "rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise EDFError(f"{path.name}: {size} bytes is shorter than an EDF header (256 bytes); "
                           "the file is truncated or not an EDF/BDF file.")
        if fixed[:8] == b"0       ":
            fmt = "edf"
        elif fixed[:1] == b"\xff" and fixed[1:8] == b"BIOSEMI":
            fmt = "bdf"
        else:
            raise EDFError(f"{path.name}: does not start with an EDF ('0') or BDF (0xFF'BIOSEMI') "
                           "version field; it is not an EDF/BDF file.")
        header_bytes = _number(_field(fixed[184:192], "header bytes", path), "header bytes", path, int)
        variant = _field(fixed[192:236], "reserved", path)
        n_records = _number(_field(fixed[236:244], "records", path), "number of data records", path, int)
        record_duration = _number(_field(fixed[244:252], "duration", path), "record duration", path)
        ns = _number(_field(fixed[252:256], "signals", path), "number of signals", path, int)
        if ns <= 0 or header_bytes != 256 * (ns + 1):
            raise EDFError(f"{path.name}: header declares {ns} signals and {header_bytes} header bytes, "
                           f"which do not agree (expected {256 * (ns + 1)}); the header is corrupt.")
        rest = f.read(256 * ns)
        if len(rest) < 256 * ns:
            raise EDFError(f"{path.name}: the signal header is cut short ({len(rest)} of {256 * ns} "
                           "bytes); the file is truncated.")
    if variant.startswith(("EDF+D", "BDF+D")):
        raise EDFError(f"{path.name}: discontinuous EDF+D/BDF+D recordings are not supported; "
                       "export the recording as continuous EDF+C.")

    def column(offset: int, width: int) -> list[str]:
        base = offset * ns
        return [_field(rest[base + k * width: base + (k + 1) * width], "signal", path) for k in range(ns)]

    labels = column(0, 16)
    units = column(16 + 80, 8)
    pmin = np.array([_number(v, "physical minimum", path) for v in column(16 + 80 + 8, 8)])
    pmax = np.array([_number(v, "physical maximum", path) for v in column(16 + 80 + 16, 8)])
    dmin = np.array([_number(v, "digital minimum", path) for v in column(16 + 80 + 24, 8)])
    dmax = np.array([_number(v, "digital maximum", path) for v in column(16 + 80 + 32, 8)])
    prefilter = column(16 + 80 + 40, 80)
    spr = np.array([_number(v, "samples per record", path, int) for v in column(16 + 80 + 120, 8)])
    if np.any(spr < 0):
        raise EDFError(f"{path.name}: negative samples-per-record in the header; the header is corrupt.")
    width = 2 if fmt == "edf" else 3
    record_bytes = int(spr.sum()) * width
    data_bytes = size - header_bytes
    available = data_bytes // record_bytes if record_bytes else 0
    if n_records == -1:
        warnings.warn(f"{path.name}: header leaves the number of records open (-1); "
                      f"inferring {available} from the file size.", DataWarning, stacklevel=3)
        n_records = available
    elif available < n_records:
        held = data_bytes / record_bytes if record_bytes else 0
        message = (f"{path.name}: header says {n_records} data records, file holds {held:.2f}; "
                   "the file is truncated")
        if on_truncated == "raise":
            raise EDFError(message + f". Pass on_truncated='warn' (CLI: --allow-truncated) to use the "
                           f"{available} complete records.")
        warnings.warn(message + f"; using {available}.", DataWarning, stacklevel=3)
        n_records = available
    if n_records <= 0 and record_duration > 0:
        raise EDFError(f"{path.name}: holds no data records; the recording is empty.")
    bad = [labels[k] for k in range(ns) if dmax[k] == dmin[k] or pmax[k] == pmin[k]]
    if bad:
        raise EDFError(f"{path.name}: channels {bad} have equal minimum and maximum in the header, "
                       "so their scaling is undefined; the header is corrupt.")
    gain = (pmax - pmin) / (dmax - dmin)
    offset = pmin - gain * dmin
    start_time = _field(fixed[176:184], "start time", path).replace(".", ":")
    return _Header(fmt, variant, header_bytes, n_records, record_duration, labels, units, prefilter,
                   spr, gain, offset, start_time)


def _signal_blocks(path: Path, h: _Header, index: int, block_bytes: int = 8 << 20):
    """Yield ``(first record, raw bytes [records, bytes per record])`` of one signal, a few MB at a
    time: mapping the whole file would count the night toward resident memory."""
    width = 2 if h.fmt == "edf" else 3
    spr = h.samples_per_record
    start = int(spr[:index].sum()) * width
    n = int(spr[index]) * width
    record_bytes = int(spr.sum()) * width
    step = max(1, block_bytes // max(record_bytes, 1))
    for r0 in range(0, h.n_records, step):
        k = min(step, h.n_records - r0)
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=h.header_bytes + r0 * record_bytes,
                        shape=(k, record_bytes))
        block = np.array(raw[:, start:start + n])
        del raw
        yield r0, block


def _parse_annotations(path: Path, h: _Header, index: int) -> list[Annotation]:
    blob = b"".join(block.tobytes() for _, block in _signal_blocks(path, h, index))
    out = []
    for onset, duration, texts in _TAL.findall(blob):
        for text in texts.split(b"\x14"):
            text = text.decode("utf-8", errors="replace").strip()
            if text:  # empty text: a time-keeping TAL
                out.append(Annotation(float(onset), float(duration) if duration else 0.0, text))
    return out


def read_edf(path: str | os.PathLike, *, channels: list[str] | None = None,
             on_truncated: str = "raise", verbose=None) -> Recording:
    """Open an EDF, EDF+ or BDF file; signals are decoded lazily with :meth:`Recording.get_data`.

    Parameters
    ----------
    path : path-like
        The file.
    channels : list of str, optional
        Keep only these channels (annotation signals are always parsed).
    on_truncated : {'raise', 'warn'}, default='raise'
        What to do when the file holds fewer data records than its header says.
    verbose : bool | str | int | None
        Logging level for this call.

    Returns
    -------
    Recording

    Raises
    ------
    EDFError
        Not an EDF/BDF file, corrupt or truncated header, empty or truncated data, EDF+D.

    Examples
    --------
    >>> rec = read_edf("data_samples/SC4001E0-PSG.edf")
    >>> rec.channel_names[:2], rec.sample_rate("EEG Fpz-Cz")
    (['EEG Fpz-Cz', 'EEG Pz-Oz'], 100.0)
    """
    check_option("on_truncated", on_truncated, ("raise", "warn"))
    path = Path(path)
    with verbose_scope(verbose):
        if not path.is_file():
            raise EDFError(f"{path}: no such file.")
        h = _read_header(path, on_truncated)
        data_idx = [k for k, lab in enumerate(h.labels) if lab not in ANNOTATION_LABELS]
        annotations = []
        for k, lab in enumerate(h.labels):
            if lab in ANNOTATION_LABELS:
                annotations += _parse_annotations(path, h, k)
        if channels is not None:
            missing = sorted(set(channels) - {h.labels[k] for k in data_idx})
            if missing:
                raise KeyError(f"{path.name}: channels {missing} not in the file; it has "
                               f"{[h.labels[k] for k in data_idx]}.")
            data_idx = [k for k in data_idx if h.labels[k] in channels]
        names = [h.labels[k] for k in data_idx]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise EDFError(f"{path.name}: channel labels {dupes} occur more than once; rename them.")
        rates = [float(h.samples_per_record[k] / h.record_duration) if h.record_duration else 0.0
                 for k in data_idx]
        rec = Recording(path, record_id(path), names, rates, [h.units[k] for k in data_idx],
                        [h.prefilter[k] for k in data_idx], h.n_records * h.record_duration,
                        h.start_time, annotations, h, data_idx)
        logger.info("read %r", rec)
        return rec
