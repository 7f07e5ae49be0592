"""The HDF5 store of preprocessed recordings: one ``<record_id>.h5`` per record in a directory
(``RUN_DIR/hdf5``; :class:`sleepfm.RunDir` knows where).

Each record file holds ``/<record_id>/<modality>/<channel_name>`` datasets (128 Hz, z-scored,
chunked and compressed) with attributes ``sample_rate``, ``original_sample_rate`` and ``kind``; the
record group carries ``duration_s``, ``n_samples``, ``start_time`` and provenance. ``index.h5``
links every record under one root with HDF5 external links, so ``h5py.File("index.h5")["SC4001"]``
reads like SleepFM's single-file layout. :class:`RecordReader` reads any time window of any channels
without loading the night.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from ..channels import MODALITIES
from ..exceptions import StoreError
from ..utils import atomic_path

logger = logging.getLogger(__name__)

INDEX_NAME = "index.h5"
CHUNK_S = 300  # one chunk per 5-minute window: the encoder's context


_ESCAPED = frozenset("%/\x7f") | frozenset(chr(c) for c in range(32))


def dataset_name(channel: str) -> str:
    """HDF5 dataset name of a channel: ``%``, ``/`` and control characters percent-escaped.

    ``/`` would create a group, a NUL byte would end the name and ``.`` alone names the group
    itself, so those become ``%2F``, ``%00`` and ``%2E``. Because ``%`` itself is escaped
    (``%25``) the mapping is injective: ``C3/M2``, ``C3_M2`` and ``C3%2FM2`` get three datasets.
    Other names are kept as they are (``EEG Fpz-Cz``). The dataset's ``channel_name`` attribute
    holds the channel's name; :class:`RecordReader` finds datasets through it.

    Raises
    ------
    StoreError
        An empty channel name (HDF5 names cannot be empty).

    Examples
    --------
    >>> dataset_name("C3/M2"), dataset_name("C3_M2"), dataset_name("50%")
    ('C3%2FM2', 'C3_M2', '50%25')
    """
    if not channel:
        raise StoreError("a channel name is empty, and an HDF5 dataset cannot be; name every "
                         "channel before writing it to the store.")
    if channel == ".":
        return "%2E"
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in channel)


class RecordWriter:
    """Write one record atomically: channels go to a temporary file renamed on :meth:`close`.

    Use as a context manager; an exception inside the block leaves no file behind.
    """

    def __init__(self, path, record_id: str, *, sample_rate: float, n_samples: int,
                 dtype: str = "float16", compression: str | None = "lzf", attrs: dict | None = None):
        self.path = Path(path)
        self.record_id = record_id
        self.sample_rate = float(sample_rate)
        self.n_samples = int(n_samples)
        self.dtype = np.dtype(dtype)
        self.compression = compression
        self._attrs = dict(attrs or {})
        self._ctx = atomic_path(self.path)

    def __enter__(self) -> "RecordWriter":
        self._tmp = self._ctx.__enter__()
        self._file = h5py.File(self._tmp, "w")
        self._group = self._file.create_group(self.record_id)
        return self

    def add_channel(self, modality: str, channel: str, data: np.ndarray, **attrs) -> None:
        """Add one channel of ``n_samples`` samples at the store's rate."""
        if modality not in MODALITIES:
            raise StoreError(f"{self.record_id}: unknown modality {modality!r}; expected {MODALITIES}.")
        if len(data) != self.n_samples:
            raise StoreError(f"{self.record_id}/{channel}: {len(data)} samples, expected {self.n_samples}.")
        chunk = min(self.n_samples, int(CHUNK_S * self.sample_rate))
        ds = self._group.require_group(modality).create_dataset(
            dataset_name(channel), data=data.astype(self.dtype, copy=False), chunks=(chunk,),
            compression=self.compression, shuffle=self.compression is not None)
        ds.attrs.update({"sample_rate": self.sample_rate, "channel_name": channel, **attrs})

    def update_attrs(self, **attrs) -> None:
        """Add record attributes (written when the record closes)."""
        self._attrs.update(attrs)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._group.attrs.update({"sample_rate": self.sample_rate, "n_samples": self.n_samples,
                                          "duration_s": self.n_samples / self.sample_rate,
                                          **{k: encode_attr(v) for k, v in self._attrs.items()}})
        finally:
            self._file.close()
            self._ctx.__exit__(exc_type, exc, tb)


def encode_attr(value):
    """An HDF5 attribute value: containers are stored as JSON text."""
    return json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


def build_index(root) -> Path:
    """(Re)write ``index.h5`` in the store directory ``root``: an external link per record file;
    atomic."""
    root = Path(root)
    index = root / INDEX_NAME
    with atomic_path(index) as tmp:
        with h5py.File(tmp, "w") as f:
            for path in sorted(root.glob("*.h5")):
                if path.name != INDEX_NAME:
                    f[path.stem] = h5py.ExternalLink(path.name, f"/{path.stem}")
    return index


class RecordReader:
    """Lazy reader of one preprocessed record.

    Attributes
    ----------
    record_id : str
    sample_rate : float
    n_samples : int
    duration_s : float
    channels : dict of str to list of str
        Channel names per modality, in :data:`~sleepfm.channels.MODALITIES` order.
    attrs : dict
        Record attributes (provenance, original rates, unplaced channels).

    Notes
    -----
    The HDF5 file opens on first use and is reopened after pickling, so readers can be sent to
    DataLoader worker processes.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: record file not found; run `sleepfm preprocess` first.")
        self._file = None
        with h5py.File(self.path, "r") as f:
            ids = list(f.keys())
            if len(ids) != 1:
                raise StoreError(f"{self.path}: expected one record group, found {ids}.")
            self.record_id = ids[0]
            g = f[self.record_id]
            self.attrs = {k: decode_attr(v) for k, v in g.attrs.items()}
            self.sample_rate = float(g.attrs["sample_rate"])
            self.n_samples = int(g.attrs["n_samples"])
            self.channels = {m: [g[m][d].attrs["channel_name"] for d in g[m]]
                             for m in MODALITIES if m in g}
            self.channel_attrs = {(m, g[m][d].attrs["channel_name"]): dict(g[m][d].attrs)
                                  for m in self.channels for d in g[m]}
            # Datasets by channel name, as stored: stores written before names were escaped
            # (``C3/M2`` as ``C3_M2``) read the same.
            self._datasets = {(m, g[m][d].attrs["channel_name"]): d
                              for m in self.channels for d in g[m]}

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def fingerprint(self) -> str:
        """Id of what the record was made from (the recording's checksum and the settings);
        empty for a record written without one."""
        return str(self.attrs.get("fingerprint", ""))

    @property
    def modalities(self) -> list[str]:
        return list(self.channels)

    def __repr__(self) -> str:
        chans = ", ".join(f"{m} {len(c)}" for m, c in self.channels.items())
        return f"<RecordReader {self.record_id} | {self.duration_s / 3600:.2f} h, {chans}>"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def _h5(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, start_s: float = 0.0, stop_s: float | None = None, *,
             modalities=None, channels: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
        """Read a time window as ``{modality: float32 array [n_channels, n_samples]}``.

        Parameters
        ----------
        start_s, stop_s : float
            Window in seconds from the record start (``stop_s=None``: to the end). A window past
            the end is an error; use :attr:`duration_s`.
        modalities : list of str, optional
            Modalities to read (default: all present).
        channels : dict, optional
            ``{modality: [channel names]}`` to read a subset of channels.
        """
        a = int(round(start_s * self.sample_rate))
        b = self.n_samples if stop_s is None else int(round(stop_s * self.sample_rate))
        if not 0 <= a < b <= self.n_samples:
            raise StoreError(f"{self.record_id}: window {start_s}–{stop_s} s is outside the record "
                             f"(0–{self.duration_s:g} s).")
        group = self._h5()[self.record_id]
        wanted = channels or {m: self.channels.get(m, []) for m in (modalities or self.modalities)}
        for mod, names in wanted.items():
            unknown = [n for n in names if n not in self.channels.get(mod, [])]
            if mod not in MODALITIES or unknown:
                raise StoreError(f"{self.record_id}: no {mod} channel(s) {unknown}; the record has "
                                 f"{self.channels}.")
        wanted = {m: n for m, n in wanted.items() if n}
        out = {}
        for mod, names in wanted.items():
            arr = np.empty((len(names), b - a), dtype=np.float32)
            for i, name in enumerate(names):
                group[mod][self._datasets[mod, name]].read_direct(arr, np.s_[a:b], np.s_[i])
            out[mod] = arr
        return out


def decode_attr(value):
    """The Python value of an HDF5 attribute written by :func:`encode_attr`."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value.item() if isinstance(value, np.generic) else value


class Store:
    """All preprocessed records of a store directory.

    Examples
    --------
    >>> store = RunDir("runs/demo").store()
    >>> rec = store.open(store.record_ids[0])
    >>> window = rec.read(0, 300)            # {modality: [channels, 38400]}
    """

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no HDF5 store; run `sleepfm preprocess INPUT --out "
                             f"{self.root.parent}` first.")

    @property
    def record_ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.h5") if p.name != INDEX_NAME)

    def __len__(self) -> int:
        return len(self.record_ids)

    def __repr__(self) -> str:
        return f"<Store {self.root} | {len(self)} records>"

    def path(self, record_id: str) -> Path:
        """The file of a record (whether or not it exists yet)."""
        return self.root / f"{record_id}.h5"

    def open(self, record_id: str) -> RecordReader:
        return RecordReader(self.path(record_id))

    def check_sample_rate(self, rate: float, record_ids=None) -> None:
        """Raise :class:`StoreError` unless every record is stored at ``rate`` Hz (the rate a
        model expects)."""
        ids = self.record_ids if record_ids is None else record_ids
        other = {}
        for rid in ids:
            with self.open(rid) as reader:
                if abs(reader.sample_rate - rate) > 1e-6:
                    other[rid] = reader.sample_rate
        if other:
            rates = ", ".join(f"{r:g}" for r in sorted(set(other.values())))
            raise StoreError(f"{self.root}: records {sorted(other)[:5]} were preprocessed at "
                             f"{rates} Hz but the encoder expects {rate:g} Hz; preprocess them "
                             f"again with sample_rate: {rate:g} into a new run directory.")

    def __iter__(self):
        for rid in self.record_ids:
            yield self.open(rid)


def file_is_complete(path) -> bool:
    """True when ``path`` is a readable record file (used to skip finished records on resume)."""
    try:
        with h5py.File(path, "r") as f:
            return len(f.keys()) == 1 and "n_samples" in next(iter(f.values())).attrs
    except (OSError, StopIteration):
        return False
