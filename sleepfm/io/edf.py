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
from decimal import Decimal
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
        EDF+ annotations (empty for plain EDF/BDF). Onsets are in seconds from the first sample.
    start_offset_s : float
        EDF+ only: seconds from ``start_time`` to the first sample, from the first data record's
        time-keeping annotation (``+0.3945312`` in a file that starts between two seconds); 0 for
        plain EDF/BDF.

    Notes
    -----
    Channel names are the header labels with unprintable characters removed; an empty label
    becomes ``channel <k>`` (``k`` counts the header's signals from 1) and a repeated label gets a
    suffix (``EEG``, ``EEG (2)``). Each repair is reported with a :class:`DataWarning`.
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
    start_offset_s: float = 0.0

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


_HEADER_FIX = "correct the header (e.g. with EDFbrowser's header editor) or export the recording again"


def _clean_labels(raw: list[str], path: Path) -> list[str]:
    """Header labels as channel names: unprintable characters removed, empty labels named
    ``channel <k>``, repeated data labels made unique (``EEG``, ``EEG (2)``); each repair warns.

    A file is never refused for its labels: a NUL byte or a copied label must not cost a night.
    """
    labels = []
    for k, text in enumerate(raw):
        clean = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in text).strip()
        if not clean:
            clean = f"channel {k + 1}"
            what = "is empty" if not text else f"({text!r}) holds only unprintable characters"
            warnings.warn(f"{path.name}: the label of signal {k + 1} {what}; naming it {clean!r}.",
                          DataWarning, stacklevel=4)
        elif clean != text:
            warnings.warn(f"{path.name}: the label of signal {k + 1} ({text!r}) holds unprintable "
                          f"characters; renamed to {clean!r}.", DataWarning, stacklevel=4)
        labels.append(clean)
    taken = set(labels)
    used: set[str] = set()
    for k, lab in enumerate(labels):
        if lab in ANNOTATION_LABELS:  # several annotation signals are allowed
            continue
        if lab in used:
            n = 2
            while f"{lab} ({n})" in taken or f"{lab} ({n})" in used:
                n += 1
            labels[k] = f"{lab} ({n})"
            warnings.warn(f"{path.name}: the label {lab!r} occurs more than once; signal {k + 1} is "
                          f"read as {labels[k]!r}.", DataWarning, stacklevel=4)
        used.add(labels[k])
    return labels


def _check_duration(text: str, value: float, labels: list[str], spr: np.ndarray, path: Path) -> None:
    """A record duration must be finite and positive; 0 only for annotation-only files."""
    if np.isfinite(value) and value > 0:
        return
    if value == 0:
        with_data = [lab for lab, n in zip(labels, spr) if lab not in ANNOTATION_LABELS and n > 0]
        if not with_data:
            return  # EDF+ allows 0 s records that hold only annotations
        raise EDFError(f"{path.name}: header field 'record duration' is {text!r} seconds, but signals "
                       f"{with_data[:5]} have samples in every record, so their sampling rate is "
                       f"undefined; {_HEADER_FIX}.")
    raise EDFError(f"{path.name}: header field 'record duration' is {text!r}, not a positive, finite "
                   f"number of seconds; {_HEADER_FIX}.")


def _count_records(path: Path, n_records: int, spr: np.ndarray, width: int, data_bytes: int,
                   on_truncated: str) -> int:
    """The number of data records to read, after checking the header's layout against the file size.

    A file *shorter* than its header promises is truncated (``on_truncated`` decides); a layout
    that cannot be right is an :class:`EDFError`, never a silent misread: no record fits, the data
    part exceeds the promised records by a part of a record, or the data part is exactly
    ``n_records`` records of another size (a samples-per-record field is wrong).
    """
    name = path.name
    per_record = int(spr.sum())
    record_bytes = per_record * width
    listed = ", ".join(str(int(v)) for v in spr[:12]) + (", …" if len(spr) > 12 else "")
    layout = (f"the header's samples per record ({listed}) add up to {per_record} samples "
              f"({record_bytes} bytes) per record")
    if n_records < -1:
        raise EDFError(f"{name}: header field 'number of data records' is {n_records}; it must be a "
                       f"record count or -1 (unknown); {_HEADER_FIX}.")
    if n_records == 0:
        return 0  # "holds no data records" is raised by the caller
    if record_bytes == 0:
        raise EDFError(f"{name}: every signal has 0 samples per record in the header, so the "
                       f"{data_bytes} bytes of data cannot be located; the samples-per-record "
                       f"fields are corrupt; {_HEADER_FIX}.")
    available, rest = divmod(data_bytes, record_bytes)
    if available == 0 and data_bytes > 0:
        raise EDFError(f"{name}: {layout}, but the file holds only {data_bytes} bytes of data, not "
                       f"one whole record; the samples-per-record fields are corrupt or the file is "
                       f"cut short; {_HEADER_FIX}.")
    if n_records == -1:
        ignored = f" (ignoring the last {rest} bytes, less than one record)" if rest else ""
        warnings.warn(f"{name}: header leaves the number of records open (-1); "
                      f"inferring {available} from the file size{ignored}.", DataWarning, stacklevel=4)
        return available
    expected = n_records * record_bytes
    if data_bytes == expected:
        return n_records
    clean_cut = data_bytes < expected and rest == 0
    if not clean_cut and data_bytes % (n_records * width) == 0:
        other = data_bytes // n_records // width
        raise EDFError(f"{name}: {layout}, but the file's {data_bytes} bytes of data are exactly "
                       f"{n_records} records of {other} samples ({data_bytes // n_records} bytes); "
                       f"a samples-per-record field is wrong, so every signal would be misread; "
                       f"{_HEADER_FIX}.")
    if data_bytes > expected:
        extra = data_bytes - expected
        if extra % record_bytes:
            raise EDFError(f"{name}: header says {n_records} data records of {record_bytes} bytes "
                           f"({expected} bytes), but the file holds {data_bytes} bytes of data, "
                           f"{extra} more, which is not a whole number of records; the "
                           f"samples-per-record fields or the record count are wrong, so the signals "
                           f"cannot be located; {_HEADER_FIX}.")
        warnings.warn(f"{name}: header says {n_records} data records, file holds {available}; "
                      f"using the {n_records} the header counts (the last {available - n_records} are "
                      "ignored).", DataWarning, stacklevel=4)
        return n_records
    held = data_bytes / record_bytes
    message = (f"{name}: header says {n_records} data records, file holds {held:.2f}; "
               "the file is truncated")
    if on_truncated == "raise":
        raise EDFError(message + f". Pass on_truncated='warn' (CLI: --allow-truncated) to use the "
                       f"{available} complete records.")
    warnings.warn(message + f"; using {available}.", DataWarning, stacklevel=4)
    return available


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
        duration_text = _field(fixed[244:252], "duration", path)
        record_duration = _number(duration_text, "record duration", path)
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

    labels = _clean_labels(column(0, 16), path)
    units = column(16 + 80, 8)
    pmin = np.array([_number(v, "physical minimum", path) for v in column(16 + 80 + 8, 8)])
    pmax = np.array([_number(v, "physical maximum", path) for v in column(16 + 80 + 16, 8)])
    dmin = np.array([_number(v, "digital minimum", path) for v in column(16 + 80 + 24, 8)])
    dmax = np.array([_number(v, "digital maximum", path) for v in column(16 + 80 + 32, 8)])
    prefilter = column(16 + 80 + 40, 80)
    spr = np.array([_number(v, "samples per record", path, int) for v in column(16 + 80 + 120, 8)])
    if np.any(spr < 0):
        raise EDFError(f"{path.name}: negative samples-per-record in the header; the header is corrupt.")
    _check_duration(duration_text, record_duration, labels, spr, path)
    width = 2 if fmt == "edf" else 3
    n_records = _count_records(path, n_records, spr, width, size - header_bytes, on_truncated)
    if n_records <= 0 and record_duration > 0:
        data_bytes = size - header_bytes
        follow = (f" according to its header, although {data_bytes} bytes of data follow it; set "
                  "the header's number of data records (-1 infers it from the file size)"
                  if data_bytes else "; the recording is empty")
        raise EDFError(f"{path.name}: holds no data records{follow}.")
    scale = np.c_[pmin, pmax, dmin, dmax]
    bad = [labels[k] for k in range(ns) if not np.all(np.isfinite(scale[k]))]
    if bad:
        raise EDFError(f"{path.name}: channels {bad} have a physical or digital minimum or maximum "
                       f"that is not finite, so their scaling is undefined; {_HEADER_FIX}.")
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


def _parse_annotations(path: Path, h: _Header, index: int
                       ) -> tuple[list[tuple[bytes, float, str]], Decimal | None]:
    """TALs of one annotation signal: ``([(onset text, duration, text)], time-keeping onset)``.

    The time-keeping onset is that of the first TAL of the first data record when its first
    annotation is empty (EDF+ puts the record's start, relative to the header's start time, there);
    ``None`` when the signal does not start with one. Onsets stay text so that subtracting it is
    exact.
    """
    blob = b"".join(block.tobytes() for _, block in _signal_blocks(path, h, index))
    record_len = int(h.samples_per_record[index]) * (2 if h.fmt == "edf" else 3)
    first = _TAL.match(blob[:record_len])
    keeping = (Decimal(first.group(1).decode()) if first and first.group(3).split(b"\x14")[0] == b""
               else None)
    out = []
    for onset, duration, texts in _TAL.findall(blob):
        for text in texts.split(b"\x14"):
            text = text.decode("utf-8", errors="replace").strip()
            if text:  # empty text: a time-keeping TAL
                out.append((onset, float(duration) if duration else 0.0, text))
    return out, keeping


def read_edf(path: str | os.PathLike, *, channels: list[str] | None = None,
             on_truncated: str = "raise", verbose=None) -> Recording:
    """Open an EDF, EDF+ or BDF file; signals are decoded lazily with :meth:`Recording.get_data`.

    Parameters
    ----------
    path : path-like
        The file.
    channels : list of str, optional
        Keep only these channels (annotation signals are always parsed). Names are the cleaned
        labels (see :class:`Recording`).
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
        Not an EDF/BDF file, corrupt or truncated header, a record duration that is not a positive
        finite number, samples per record that do not fit the file size, empty or truncated data,
        EDF+D.

    Warns
    -----
    DataWarning
        Truncated data read with ``on_truncated='warn'``, a record count inferred from the file
        size, channel labels repaired (unprintable characters, empty or repeated labels).

    Notes
    -----
    Annotation onsets are seconds from the first sample: EDF+ writes them relative to the header's
    start second, and the first data record's time-keeping annotation says how much later the
    first sample comes (:attr:`Recording.start_offset_s`); it is subtracted, as pyedflib and MNE do.

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
        tals, keeping = [], None
        for j, k in enumerate(k for k, lab in enumerate(h.labels) if lab in ANNOTATION_LABELS):
            found, first = _parse_annotations(path, h, k)
            tals += found
            if j == 0:  # only the first annotation signal keeps time
                keeping = first
        keeping = keeping or Decimal(0)
        annotations = [Annotation(float(Decimal(onset.decode()) - keeping), duration, text)
                       for onset, duration, text in tals]
        if keeping:
            logger.info("%s: first sample %s s after the header's start time; annotation onsets "
                        "are counted from the first sample", path.name, keeping)
        if channels is not None:
            missing = sorted(set(channels) - {h.labels[k] for k in data_idx})
            if missing:
                raise KeyError(f"{path.name}: channels {missing} not in the file; it has "
                               f"{[h.labels[k] for k in data_idx]}.")
            data_idx = [k for k in data_idx if h.labels[k] in channels]
        names = [h.labels[k] for k in data_idx]
        rates = [float(h.samples_per_record[k] / h.record_duration) if h.record_duration else 0.0
                 for k in data_idx]
        rec = Recording(path, record_id(path), names, rates, [h.units[k] for k in data_idx],
                        [h.prefilter[k] for k in data_idx], h.n_records * h.record_duration,
                        h.start_time, annotations, h, data_idx, float(keeping))
        logger.info("read %r", rec)
        return rec
