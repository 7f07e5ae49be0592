"""A recording preprocessed in memory, a modality at a time: the store record ``predict`` never
writes.

:class:`StreamedRecord` opens an EDF/BDF, places its channels with a channel map, and preprocesses
the channels of the modalities asked for with the very functions ``sleepfm preprocess`` uses
(:func:`~sleepfm.stages.preprocess.preprocess_channels`: anti-alias filter, resampling, robust
z-score), keeping each as the store would hold it (``PreprocessConfig.dtype``, float16 by
default). It then reads like a store record (:class:`~sleepfm.io.store.RecordReader`:
``channels``, ``channel_attrs``, ``read``), so whatever reads store records (window covering,
spectral features) reads it, and sees the very values a store record of the same file holds.
:meth:`StreamedRecord.release` drops a modality's channels once they are used, so a night is
never held whole.
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

from ..channels import MODALITIES, ChannelMap
from ..config import PreprocessConfig
from ..exceptions import SignalError, StoreError
from .preprocess import open_recording, preprocess_channels

logger = logging.getLogger(__name__)

try:  # glibc: hand freed heap pages back to the OS
    _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError, TypeError):  # another C library: nothing to do
    _MALLOC_TRIM = None


def _return_freed_memory() -> None:
    """Give the pages of freed arrays back to the OS (glibc keeps them otherwise, and a night's
    channels, freed one modality at a time, would stay resident)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class StreamedRecord:
    """An EDF/BDF recording preprocessed in memory on demand; reads like a store record.

    Parameters
    ----------
    edf_path : path-like
        The recording.
    config : PreprocessConfig
        Preprocessing settings (those of the run whose model stages it).
    channel_map : ChannelMap
        Places channels in modalities.
    threads : int, default=1
        Channels preprocessed at once (each holds a few copies of the channel at its own rate).

    Attributes
    ----------
    path : Path
    record_id : str
    sample_rate : float
        The store's rate (``config.sample_rate``).
    n_samples : int
    placed : dict of str to list of str
        Channels the map places, by modality (loaded or not).
    unplaced : list of str
    dropped : dict of str to str
        Channels found unusable when loaded (flat, non-finite), with the reason.

    Raises
    ------
    EDFError, ChannelError, SignalError
        As :func:`~sleepfm.stages.preprocess.open_recording`.

    Examples
    --------
    >>> record = StreamedRecord("data_samples/SYN0001.edf", PreprocessConfig(), DEFAULT_CHANNEL_MAP)
    >>> record.load(["BAS"])
    >>> record.read(0, 300)["BAS"].shape
    (2, 38400)
    """

    def __init__(self, edf_path, config: PreprocessConfig, channel_map: ChannelMap, *,
                 threads: int = 1):
        self.path = Path(edf_path)
        self.config, self.threads = config, threads
        self._rec, self._assignment, self.n_samples = open_recording(self.path, config,
                                                                     channel_map)
        self.record_id = self._rec.record_id
        self.sample_rate = float(config.sample_rate)
        self.placed = self._assignment.by_modality()
        self.unplaced = list(self._assignment.unplaced)
        self.dropped: dict[str, str] = {}
        self._signals: dict[str, dict[str, np.ndarray]] = {}

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def channels(self) -> dict[str, list[str]]:
        """Usable channels of the loaded modalities, by modality (what a store record holds)."""
        return {m: list(self._signals[m]) for m in MODALITIES if self._signals.get(m)}

    @property
    def channel_attrs(self) -> dict[tuple[str, str], dict]:
        """``{(modality, channel): {"kind": ...}}`` of the loaded channels."""
        return {(m, n): {"kind": self._assignment.kinds[n]}
                for m, names in self.channels.items() for n in names}

    def __repr__(self) -> str:
        chans = ", ".join(f"{m} {len(c)}" for m, c in self.placed.items())
        return (f"<StreamedRecord {self.record_id} | {self.duration_s / 3600:.2f} h, {chans}; "
                f"loaded {', '.join(self._signals) or 'none'}>")

    def load(self, modalities) -> None:
        """Preprocess the channels of ``modalities`` not loaded yet (unusable ones go to
        :attr:`dropped`)."""
        for mod in modalities:
            if mod in self._signals:
                continue
            kept = self._signals[mod] = {}
            for name, z in preprocess_channels(self._rec, self.placed.get(mod, []), self.config,
                                               self.n_samples, threads=self.threads):
                if isinstance(z, SignalError):
                    self.dropped[name] = str(z)
                    logger.warning("%s: channel %r dropped: %s", self.path.name, name, z)
                else:
                    kept[name] = z.astype(self.config.dtype, copy=False)
                del z
                _return_freed_memory()

    def release(self, modalities) -> None:
        """Forget the preprocessed channels of ``modalities`` (they load again when asked for)."""
        for mod in modalities:
            self._signals.pop(mod, None)
        _return_freed_memory()

    def read(self, start_s: float = 0.0, stop_s: float | None = None, *,
             modalities=None, channels: dict[str, list[str]] | None = None
             ) -> dict[str, np.ndarray]:
        """A time window of loaded channels as ``{modality: float32 [n_channels, n_samples]}``,
        as :meth:`RecordReader.read <sleepfm.io.store.RecordReader.read>` reads a store record.

        Raises
        ------
        StoreError
            The window lies outside the record, or a channel asked for is not loaded.
        """
        a = int(round(start_s * self.sample_rate))
        b = self.n_samples if stop_s is None else int(round(stop_s * self.sample_rate))
        if not 0 <= a < b <= self.n_samples:
            raise StoreError(f"{self.record_id}: window {start_s}–{stop_s} s is outside the record "
                             f"(0–{self.duration_s:g} s).")
        loaded = self.channels
        wanted = channels or {m: loaded.get(m, []) for m in (modalities or loaded)}
        out = {}
        for mod, names in wanted.items():
            unknown = [n for n in names if n not in loaded.get(mod, [])]
            if unknown:
                raise StoreError(f"{self.record_id}: {mod} channel(s) {unknown} are not loaded; "
                                 f"loaded: {loaded}.")
            if names:
                arr = out[mod] = np.empty((len(names), b - a), dtype=np.float32)
                for i, name in enumerate(names):
                    arr[i] = self._signals[mod][name][a:b]
        return out
