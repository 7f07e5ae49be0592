"""Write EDF, EDF+ and BDF files (test fixtures, synthetic nights, round trips with the reader)."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np

from ..exceptions import EDFError
from ..utils import atomic_path, check_option
from .edf import Annotation


def _fmt_number(x: float) -> str:
    """Shortest representation of ``x`` that fits the 8-character EDF field."""
    for digits in range(8, 0, -1):
        text = f"{x:.{digits}g}"
        if len(text) <= 8:
            return text
    raise EDFError(f"{x} cannot be written in an 8-character EDF header field.")


def _tal(onset: float, duration: float, text: str) -> bytes:
    head = f"{onset:+.4f}".rstrip("0").rstrip(".")
    if duration:
        head += "\x15" + f"{duration:.4f}".rstrip("0").rstrip(".")
    return (head + "\x14" + text + "\x14\x00").encode("utf-8")


def write_edf(path: str | os.PathLike, signals: list[np.ndarray], sample_rates: list[float],
              channel_names: list[str], *, units: list[str] | None = None,
              annotations: list[Annotation] | list[tuple] | None = None,
              record_duration: float = 1.0, fmt: str = "edf", patient_id: str = "X X X X",
              start: datetime | None = None) -> Path:
    """Write signals (physical units) as EDF/BDF, or EDF+/BDF+ when ``annotations`` are given.

    Each signal is scaled to the full digital range of its own min/max. The file is written to a
    temporary name and renamed, so a failed write leaves nothing behind.

    Parameters
    ----------
    signals : list of ndarray
        One 1-D array per channel; each must hold a whole number of records
        (``len == duration * rate``, the same duration for all).
    sample_rates : list of float
        Hz; ``rate * record_duration`` must be an integer.
    annotations : list of Annotation or (onset, duration, text), optional
    fmt : {'edf', 'bdf'}, default='edf'
    patient_id : str
        Header patient field (for tests of de-identification; real data should not need this).
    """
    check_option("fmt", fmt, ("edf", "bdf"))
    path = Path(path)
    n_sig = len(signals)
    if not (n_sig == len(sample_rates) == len(channel_names)):
        raise ValueError("signals, sample_rates and channel_names must have the same length.")
    units = list(units) if units is not None else ["uV"] * n_sig
    spr = []
    for name, x, fs in zip(channel_names, signals, sample_rates):
        k = fs * record_duration
        if abs(k - round(k)) > 1e-9 or round(k) <= 0:
            raise ValueError(f"channel {name!r}: {fs} Hz × {record_duration} s records is not a whole "
                             "number of samples; choose another record_duration.")
        spr.append(int(round(k)))
    n_records = {len(x) / s for x, s in zip(signals, spr)}
    if len(n_records) != 1 or not float(next(iter(n_records))).is_integer():
        raise ValueError("every signal must span the same whole number of data records.")
    n_records = int(next(iter(n_records)))
    digital_max = 32767 if fmt == "edf" else 8388607
    width = 2 if fmt == "edf" else 3

    anns = [a if isinstance(a, Annotation) else Annotation(*a) for a in (annotations or [])]
    ann_blocks: list[bytes] = []
    if annotations is not None:
        per_record: list[list[bytes]] = [[] for _ in range(n_records)]
        for a in sorted(anns, key=lambda a: a.onset):
            r = min(int(a.onset // record_duration), n_records - 1) if n_records else 0
            per_record[max(r, 0)].append(_tal(a.onset, a.duration, a.description))
        ann_blocks = [_tal(r * record_duration, 0, "") + b"".join(items)
                      for r, items in enumerate(per_record)]
        ann_len = max(len(b) for b in ann_blocks) if ann_blocks else 64
        ann_samples = -(-ann_len // width) + 1
    labels = list(channel_names) + (["EDF Annotations" if fmt == "edf" else "BDF Annotations"]
                                     if ann_blocks else [])
    ns = len(labels)
    pmins, pmaxs = [], []
    for x in signals:
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("signals must be finite to be written as EDF.")
        if hi - lo < 1e-6:
            hi, lo = lo + 1.0, lo - 1.0
        lo_txt, hi_txt = _fmt_number(lo), _fmt_number(hi)
        # Rounding the header text must not shrink the range below the data.
        lo_v, hi_v = float(lo_txt), float(hi_txt)
        if lo_v > lo:
            lo_txt = _fmt_number(lo - abs(lo) * 1e-5 - 1e-6)
        if hi_v < hi:
            hi_txt = _fmt_number(hi + abs(hi) * 1e-5 + 1e-6)
        pmins.append(lo_txt)
        pmaxs.append(hi_txt)

    start = start or datetime(2000, 1, 1, 22, 0, 0)
    variant = ("EDF+C" if fmt == "edf" else "BDF+C") if ann_blocks else ("" if fmt == "edf" else "24BIT")
    recording_field = (f"Startdate {start.strftime('%d-%b-%Y').upper()} X X sleepfm" if ann_blocks
                       else "sleepfm synthetic")

    def pad(text: str, width_: int) -> bytes:
        raw = text.encode("latin-1", errors="replace")[:width_]
        return raw + b" " * (width_ - len(raw))

    head = (pad("0", 8) if fmt == "edf" else b"\xffBIOSEMI")
    head += pad(patient_id, 80) + pad(recording_field, 80)
    head += pad(start.strftime("%d.%m.%y"), 8) + pad(start.strftime("%H.%M.%S"), 8)
    head += pad(str(256 * (ns + 1)), 8) + pad(variant, 44) + pad(str(n_records), 8)
    head += pad(_fmt_number(record_duration), 8) + pad(str(ns), 4)
    all_spr = spr + ([ann_samples] if ann_blocks else [])
    ann_pmin = ["-1"] if ann_blocks else []
    ann_pmax = ["1"] if ann_blocks else []
    dmin_txt = str(-digital_max - 1)
    columns = [
        (labels, 16), ([""] * ns, 80), (units + ([""] if ann_blocks else []), 8),
        (pmins + ann_pmin, 8), (pmaxs + ann_pmax, 8),
        ([dmin_txt] * ns, 8), ([str(digital_max)] * ns, 8),
        ([""] * ns, 80), ([str(s) for s in all_spr], 8), ([""] * ns, 32),
    ]
    for values, w in columns:
        head += b"".join(pad(v, w) for v in values)

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(head)
            record_width = sum(all_spr)
            digital = np.zeros((n_records, record_width), dtype=np.int32)
            col = 0
            for x, s, lo, hi in zip(signals, spr, pmins, pmaxs):
                lo, hi = float(lo), float(hi)
                scale = (2 * digital_max + 1) / (hi - lo)
                d = np.round((np.asarray(x, dtype=np.float64) - lo) * scale - digital_max - 1)
                digital[:, col:col + s] = np.clip(d, -digital_max - 1, digital_max).reshape(n_records, s)
                col += s
            if fmt == "edf":
                body = digital.astype("<i2")
                if ann_blocks:
                    body = body.view(np.uint8).reshape(n_records, -1).copy()
            else:
                u = (digital & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(n_records, record_width, 4)
                body = np.ascontiguousarray(u[:, :, :3]).reshape(n_records, -1)
            if ann_blocks:
                ann_bytes = ann_samples * width
                data_bytes = col * width
                body[:, data_bytes:data_bytes + ann_bytes] = 0
                for r, blob in enumerate(ann_blocks):
                    body[r, data_bytes:data_bytes + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
            f.write(np.ascontiguousarray(body).tobytes())
    return path
