"""The model side of ``sleepfm predict``: an encoder, a staging head, and the settings that feed
them, as one object that stages a recording streamed from its EDF/BDF.

:class:`StagingModel` holds what staging a new night needs: the encoder, the staging head, what
the head takes (an epoch embedding, spectral features, both, or the night's 5 s tokens), the
preprocessing settings and the channel map. :meth:`StagingModel.from_run` builds one from a run
directory; other constructors (imported published weights) only have to fill the same fields.

Staging streams (:meth:`StagingModel.predict_proba`): the recording's channels are preprocessed
in memory a modality at a time (:class:`~sleepfm.stages.stream.StreamedRecord`), each modality
is encoded over windows of the encoder's context that cover the night as ``sleepfm embed``'s do,
and only its 5 s tokens (``[n_tokens, D]``) are kept before the next modality is loaded; nothing
is written to disk and the night's signals are never all in memory at once.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..artifacts import PUBLISHED_CHANNEL_MAP, PUBLISHED_MANIFEST, load_encoder, load_heads
from ..checkpoint import artifact_id
from ..channels import DEFAULT_CHANNEL_MAP, KIND_TO_MODALITY, MODALITIES, OSF_LEADS, ChannelMap
from ..config import PreprocessConfig, load_config
from ..exceptions import ChannelError, InvalidParameterError, SignalError, StoreError
from ..io.labels import Hypnogram
from ..lead_epochs import LeadLayout, n_epochs, read_lead_epochs, record_leads
from ..models import ViT1D
from ..models.heads import WindowStagingNet
from ..models.precision import inference_autocast
from ..rundir import RunDir
from ..spectral import feature_names
from ..vocab import EPOCH_S, WINDOW_S
from ..windows import fuse_tokens, plan_windows, summarise_tokens
from .features import record_spectral_features
from .inference import check_encoder, head_features, predict_windows, spectral_kinds
from .preprocess import channel_map_of
from .stream import StreamedRecord

logger = logging.getLogger(__name__)


def preprocess_config(saved: dict, own_map: Path, *, channel_map: str | None = None,
                      on_truncated: str | None = None) -> PreprocessConfig:
    """Preprocessing settings ``saved`` with a channel map (``channel_map``, else ``own_map``
    when it exists) and ``on_truncated`` overridden when given."""
    known = {f.name for f in fields(PreprocessConfig)}
    settings = {k: v for k, v in saved.items() if k in known}
    settings["channel_map"] = channel_map or (str(own_map) if own_map.is_file() else None)
    if on_truncated is not None:
        settings["on_truncated"] = on_truncated
    return load_config(PreprocessConfig, settings)


def run_preprocess_config(run: RunDir, *, channel_map: str | None = None,
                          on_truncated: str | None = None) -> PreprocessConfig:
    """A run's preprocessing settings (``run.json``) and channel map (its own, or
    ``channel_map``), with ``on_truncated`` overridden when given."""
    saved = run.stage_info("preprocess").get("config")
    if saved is None:
        logger.warning("%s has no preprocessing config; using the defaults", run.run_json)
        saved = {}
    return preprocess_config(saved, run.channel_map_file, channel_map=channel_map,
                             on_truncated=on_truncated)


@torch.inference_mode()
def modality_tokens(encoder: nn.Module, record, modality: str, *, batch_size: int = 4,
                    device: str = "cpu") -> np.ndarray:
    """5 s tokens ``[n_tokens, D]`` of one modality of a record (a store record or a
    :class:`~sleepfm.stages.stream.StreamedRecord`), from windows of the encoder's context that
    cover it as the embedding stage's do (:func:`~sleepfm.windows.plan_windows`), ``batch_size``
    windows per forward pass."""
    cfg = encoder.config
    token_s = cfg.token_seconds
    window_s = cfg.context_tokens * token_s
    n_tokens = int(record.duration_s // token_s)
    length = min(window_s, n_tokens * token_s)
    plan = plan_windows(record.duration_s, window_s, token_s)
    out = np.zeros((n_tokens, cfg.embed_dim), dtype=np.float32)
    n_channels = len(record.channels[modality])
    n_samples = int(round(length * record.sample_rate))
    for i in range(0, len(plan), batch_size):
        part = plan[i:i + batch_size]
        x = np.empty((len(part), n_channels, n_samples), dtype=np.float32)
        for b, (s, _) in enumerate(part):
            x[b] = record.read(s, s + length, modalities=[modality])[modality]
        with inference_autocast(device):
            tokens = encoder({modality: torch.from_numpy(x).to(device)}).tokens[modality]
        tokens = tokens.float().cpu().numpy()
        for b, (s, keep) in enumerate(part):
            first = int(round(s / token_s)) + keep
            out[first:first + tokens.shape[1] - keep] = tokens[b, keep:]
    return out


@torch.inference_mode()
def lead_epoch_embeddings(encoder: ViT1D, record, layout: LeadLayout, *, batch_size: int = 64,
                          device: str = "cpu",
                          done: Callable[[int], object] | None = None) -> np.ndarray:
    """``[n_epochs, D]``: every whole 30 s epoch of the OSF leads of a record (a store record or
    a :class:`~sleepfm.stages.stream.StreamedRecord`) through a ViT-1D, as ``sleepfm embed``
    stores them; ``batch_size`` epochs per forward pass (bf16 autocast on CUDA); ``done(n)`` is
    called after each batch of ``n`` epochs (a progress bar's ``update``)."""
    cfg = encoder.config
    mask = torch.from_numpy(layout.present).to(device)
    count = n_epochs(record)
    out = np.zeros((count, encoder.embed_dim), dtype=np.float32)
    for first in range(0, count, batch_size):
        n = min(batch_size, count - first)
        x = read_lead_epochs(record, layout, first, n, rate=cfg.sampling_rate, samples=cfg.seq_len)
        with inference_autocast(device):
            emb = encoder(torch.from_numpy(x).to(device), mask.expand(n, -1))
        out[first:first + n] = emb.float().cpu().numpy()
        if done is not None:
            done(n)
    return out


@dataclass
class StagingModel:
    """An encoder and a staging head with the settings that feed them: stages EDF/BDF files.

    Parameters
    ----------
    head : fitted staging head, token head or WindowStagingNet
        A head on per-epoch inputs (``predict_proba(list of [n_epochs, F]) -> list of
        [n_epochs, C]``, e.g. :class:`~sleepfm.models.heads.StagingHead`); with
        ``embedding="tokens"``, a head on a night's 5 s tokens (``predict_proba({modality:
        [n_tokens, D]}) -> [n_epochs, C]``, e.g. a wrapper of the published SleepFM staging net);
        or a network fine-tuned end to end (:class:`~sleepfm.models.heads.WindowStagingNet`,
        encoder included).
    classes : tuple of str
        Stage names of the head's outputs, in order (e.g. ``("W", "N1", "N2", "N3", "REM")``).
    scheme : str, default="aasm5"
        The stage scheme of :data:`~sleepfm.vocab.SCHEMES` the classes follow.
    encoder : nn.Module, optional
        The frozen encoder whose epoch embeddings the head takes: one of the SleepFM family,
        called as ``encoder({modality: [B, C, T]}).tokens[modality] -> [B, T /
        samples_per_token, D]`` with ``encoder.config`` giving ``modalities``, ``sampling_rate``,
        ``token_seconds``, ``context_tokens`` and ``tokens_per_epoch``; or a ViT-1D (OSF),
        which embeds each 30 s epoch of the 12 OSF leads (``fused`` only, as ``sleepfm embed``
        stores it; the night's channels are then all held at once, about 7 MiB per channel over
        8 h at 128 Hz in float16).
    embedding : str or None, default="fused"
        What the head takes from the encoder: the ``fused`` epoch embedding (mean of the present
        modalities) or a modality's; ``tokens``, every present modality's 5 s tokens; None when
        it takes nothing from it (spectral features alone, or end to end).
    spectral_kinds : tuple of str, default=()
        Channel kinds whose spectral features (:func:`sleepfm.spectral.spectral_features`) the
        head takes after the embedding.
    preprocess : PreprocessConfig, optional
        Settings that bring a channel to the encoder's rate and scale (default: the defaults).
    channel_map : ChannelMap, default=DEFAULT_CHANNEL_MAP
        Places a recording's channels in modalities.
    batch_size : int, default=4
        Windows per forward pass of the encoder (memory grows with it; speed hardly does); a
        ViT-1D takes the 30 s epochs of as many 5-minute windows.
    threads : int, default=1
        Channels preprocessed at once (faster on idle cores; each holds a few copies of a
        channel at its own rate).
    device : str, default="cpu"
        Where the encoder runs (bf16 autocast on CUDA, as ``sleepfm embed``).
    source : str, default="the staging head"
        What the model is, for messages (e.g. "the staging head of runs/demo").

    Raises
    ------
    InvalidParameterError
        The parts do not fit together: an embedding without an encoder, an encoder at another
        sampling rate than ``preprocess``, or a head that takes another number of values per
        epoch than the embedding and spectral features give.

    Notes
    -----
    Another source of models (e.g. imported published weights) is another constructor that
    fills these fields; :meth:`predict_proba` streams whatever they hold.

    Examples
    --------
    >>> model = StagingModel.from_run("runs/demo")
    >>> model.hypnogram("data_samples/SYN0001.edf").head(2)
    """

    head: Any
    classes: tuple[str, ...]
    scheme: str = "aasm5"
    encoder: nn.Module | None = None
    embedding: str | None = "fused"
    spectral_kinds: tuple[str, ...] = ()
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    channel_map: ChannelMap = DEFAULT_CHANNEL_MAP
    batch_size: int = 4
    threads: int = 1
    device: str = "cpu"
    source: str = "the staging head"

    def __post_init__(self) -> None:
        self.classes, self.spectral_kinds = tuple(self.classes), tuple(self.spectral_kinds)
        if self.end_to_end:
            return
        if self.embedding is None and not self.spectral_kinds:
            raise InvalidParameterError(f"{self.source} takes neither an embedding nor spectral "
                                        "features; give one of them.")
        if self.embedding is not None:
            if self.embedding not in ("fused", "tokens", *MODALITIES):
                raise InvalidParameterError(f"embedding must be 'fused', 'tokens' or one of "
                                            f"{MODALITIES}, got {self.embedding!r}.")
            if self.embedding == "tokens" and self.spectral_kinds:
                raise InvalidParameterError("a head on tokens takes no spectral features; "
                                            "leave spectral_kinds empty.")
            if self.encoder is None:
                raise InvalidParameterError(f"{self.source} takes {self.embedding} embeddings; "
                                            "give the encoder that makes them.")
            if self.lead_epochs and self.embedding != "fused":
                raise InvalidParameterError(f"a ViT-1D encoder gives fused epoch embeddings only, "
                                            f"not {self.embedding!r}.")
            rate = self.encoder.config.sampling_rate
            if not self.lead_epochs and abs(rate - self.preprocess.sample_rate) > 1e-6:
                raise InvalidParameterError(
                    f"the encoder expects {rate:g} Hz but the preprocessing settings give "
                    f"{self.preprocess.sample_rate:g} Hz; use sample_rate={rate:g}.")
        widths = {}
        if self.embedding == "tokens":
            return
        if self.embedding:
            widths[f"{self.embedding} embeddings"] = self.encoder.embed_dim
        if self.spectral_kinds:
            widths[f"spectral features of {'/'.join(self.spectral_kinds)}"] = len(
                feature_names(self.spectral_kinds))
        expected = getattr(self.head, "n_features_in_", None)
        if expected is not None and expected != sum(widths.values()):
            given = " + ".join(f"{n} {what}" for what, n in widths.items())
            raise InvalidParameterError(
                f"{self.source} takes {expected} values per epoch, but it is given {given}; pair "
                "the head with the encoder and features it was trained on.")

    @property
    def end_to_end(self) -> bool:
        """The head is a network fine-tuned end to end (it holds its own encoder)."""
        return isinstance(self.head, WindowStagingNet)

    @property
    def lead_epochs(self) -> bool:
        """The encoder is a ViT-1D (OSF): it embeds 30 s epochs of the OSF leads."""
        return isinstance(self.encoder, ViT1D)

    @classmethod
    def from_run(cls, run_dir, *, channel_map: str | None = None,
                 on_truncated: str | None = None, batch_size: int = 4, threads: int = 1,
                 device: str = "cpu") -> StagingModel:
        """The encoder, staging head, preprocessing settings and channel map of a run.

        Parameters
        ----------
        run_dir : path-like or RunDir
            A run with ``heads/staging`` (``sleepfm finetune staging``) and, unless the head
            takes spectral features alone or was fine-tuned end to end, ``checkpoints/encoder``.
        channel_map : str, optional
            A channel-map YAML for the recordings (default: the one the run was preprocessed
            with).
        on_truncated : {'raise', 'warn'}, optional
            Overrides the run's preprocessing setting.
        batch_size, threads, device
            As in :class:`StagingModel`.

        Raises
        ------
        StoreError
            The run lacks a staging head or the encoder it needs, the head was trained on another
            encoder or another version of the spectral features.
        """
        run = RunDir(run_dir)
        run.head_record("staging")  # a missing head names the stage to run first
        heads, record = load_heads(run.head_dir("staging"), device=device)
        preprocess = run_preprocess_config(run, channel_map=channel_map, on_truncated=on_truncated)
        common = dict(classes=record["classes"], scheme=record["scheme"], preprocess=preprocess,
                      channel_map=channel_map_of(preprocess), batch_size=batch_size,
                      threads=threads, device=device, source=f"the staging head of {run.path}")
        if record["mode"] == "finetune":
            return cls(heads["window"], embedding=None, **common)
        features = head_features(record)
        encoder = None
        if features != "spectral":
            check_encoder(record, run.encoder_id(), run.encoder_dir)
            encoder, _ = load_encoder(run.encoder_dir, device=device)
        return cls(heads["staging"], encoder=encoder,
                   embedding=record["embedding"] if features != "spectral" else None,
                   spectral_kinds=spectral_kinds(record) or (), **common)

    @classmethod
    def from_weights(cls, weights_dir, *, channel_map: str | None = None,
                     on_truncated: str | None = None, batch_size: int = 4, threads: int = 1,
                     device: str = "cpu") -> StagingModel:
        """SleepFM's published encoder and staging head, as ``sleepfm import-weights
        sleepfm-clinical`` wrote them (the head takes the night's 5 s tokens of every modality).

        Parameters
        ----------
        weights_dir : path-like
            The import's output folder (``encoder/``, ``staging/``, ``channel_map.yaml``).
        channel_map : str, optional
            A channel-map YAML for the recordings (default: the imported reference table).
        on_truncated, batch_size, threads, device
            As in :meth:`from_run` (preprocessing otherwise at its defaults: 128 Hz, z-scored).

        Raises
        ------
        StoreError
            The folder is not an import's output, lacks the staging head, or its head was
            imported with another encoder.
        """
        folder = Path(weights_dir)
        net, encoder = published_head(folder, "staging", device=device)
        preprocess = preprocess_config({}, folder / PUBLISHED_CHANNEL_MAP, channel_map=channel_map,
                                       on_truncated=on_truncated)
        return cls(net, classes=net.classes, encoder=encoder, embedding="tokens",
                   preprocess=preprocess, channel_map=channel_map_of(preprocess),
                   batch_size=batch_size, threads=threads, device=device,
                   source=f"the published staging head in {folder}")

    def night_tokens(self, edf_path) -> dict[str, np.ndarray]:
        """``{modality: [n_tokens, D]}``: the 5 s tokens of every modality of one recording the
        encoder takes (streamed as :meth:`predict_proba` does); raises as it does."""
        return self._tokens(self._open(edf_path))

    def _open(self, edf_path) -> StreamedRecord:
        record = StreamedRecord(edf_path, self.preprocess, self.channel_map,
                                threads=self.threads)
        if record.duration_s < EPOCH_S:
            raise SignalError(f"{record.path.name}: {record.duration_s:.1f} s is shorter than "
                              f"one {EPOCH_S:g} s epoch; there is nothing to stage.")
        return record

    def predict_proba(self, edf_path) -> np.ndarray:
        """Stage probabilities ``[n_epochs, len(classes)]`` of one EDF/BDF recording, one row
        per whole 30 s epoch from its start.

        Raises
        ------
        EDFError
            The file cannot be read.
        ChannelError
            No channel of what the head takes (the encoder's modalities, or a spectral kind).
        SignalError
            The recording is shorter than one 30 s epoch.
        """
        record = self._open(edf_path)
        if self.end_to_end:
            record.load(self.head.encoder.config.modalities)
            self._check_channels(record, self.head.encoder.config.modalities)
            return predict_windows(self.head, record, batch_size=self.batch_size)
        if self.embedding == "tokens":
            return self.head.predict_proba(self._tokens(record))
        parts = [self._epochs(record)] if self.embedding else []
        if self.spectral_kinds:
            record.load({KIND_TO_MODALITY[k] for k in self.spectral_kinds})
            parts.append(record_spectral_features(
                record, self.spectral_kinds, n_epochs=len(parts[0]) if parts else None,
                where=self.source))
        return self.head.predict_proba([np.hstack(parts)])[0]

    def hypnogram(self, edf_path, *, probabilities: bool = True) -> pd.DataFrame:
        """The hypnogram of one recording as SleepFM's CSV table: ``Start, Stop, StageName,
        StageNumber`` (+ a ``P_<stage>`` column per class, rounded to 4 decimals), one row per
        whole 30 s epoch; raises as :meth:`predict_proba`."""
        return self.frame(self.predict_proba(edf_path), probabilities=probabilities)

    def frame(self, proba: np.ndarray, *, probabilities: bool = True) -> pd.DataFrame:
        """The hypnogram table of stage probabilities ``[n_epochs, len(classes)]`` (see
        :meth:`hypnogram`)."""
        frame = Hypnogram(proba.argmax(1), scheme=self.scheme).to_frame()
        if probabilities:
            for k, c in enumerate(self.classes):
                frame[f"P_{c}"] = proba[:, k].round(4)
        return frame

    def _tokens(self, record: StreamedRecord) -> dict[str, np.ndarray]:
        """``{modality: [n_tokens, D]}`` of the modalities the head takes, encoding one modality
        at a time (its channels are released once encoded, unless spectral features need them)."""
        cfg = self.encoder.config
        wanted = cfg.modalities if self.embedding in ("fused", "tokens") else (self.embedding,)
        keep = {KIND_TO_MODALITY[k] for k in self.spectral_kinds}
        tokens = {}
        # The modality with the most channels first, while nothing else is in memory.
        for mod in sorted(wanted, key=lambda m: -len(record.placed.get(m, []))):
            record.load([mod])
            if mod in record.channels:
                tokens[mod] = modality_tokens(self.encoder, record, mod,
                                              batch_size=self.batch_size, device=self.device)
            if mod not in keep:
                record.release([mod])
        self._check_channels(record, wanted, found=tokens)
        return tokens

    def _epochs(self, record: StreamedRecord) -> np.ndarray:
        """``[n_epochs, D]`` epoch embeddings of ``self.embedding``, as ``sleepfm embed``
        computes them."""
        if self.lead_epochs:
            record.load(MODALITIES)  # any modality may fill an OSF lead
            layout = record_leads(record, channel_map=self.channel_map)
            if not layout.present.any():
                raise ChannelError(
                    f"{record.path.name}: no channel fills one of the OSF leads {list(OSF_LEADS)} "
                    f"that {self.source} takes (placed: {record.placed or 'none'}; dropped: "
                    f"{record.dropped or 'none'}); add aliases with --channel-map FILE.")
            return lead_epoch_embeddings(self.encoder, record, layout,
                                         batch_size=self.batch_size * int(WINDOW_S // EPOCH_S),
                                         device=self.device)
        cfg = self.encoder.config
        tokens = self._tokens(record)
        night = fuse_tokens(tokens) if self.embedding == "fused" else tokens[self.embedding]
        return summarise_tokens(night, tokens_per_epoch=cfg.tokens_per_epoch,
                                tokens_per_window=cfg.context_tokens)["epoch"]

    def _check_channels(self, record: StreamedRecord, modalities, *, found=None) -> None:
        """Raise unless the record has a usable channel of one of ``modalities``."""
        found = record.channels if found is None else found
        if any(m in found for m in modalities):
            return
        raise ChannelError(
            f"{record.path.name}: no usable channel of {'/'.join(modalities)}, which "
            f"{self.source} takes (placed: {record.placed or 'none'}; dropped: "
            f"{record.dropped or 'none'}; unplaced: {record.unplaced or 'none'}); add aliases "
            "for its leads with --channel-map FILE.")


def published_head(folder: Path, part: str, *, device: str = "cpu") -> tuple[nn.Module, nn.Module]:
    """``(head net, encoder)`` of an import of SleepFM's published weights (``part``:
    ``staging`` or ``diagnosis``), checked to belong together.

    Raises
    ------
    StoreError
        ``folder`` is not an import's output (no ``weights.json``), lacks ``part`` or the
        encoder, or the head was imported with another encoder.
    """
    if not (folder / PUBLISHED_MANIFEST).is_file():
        raise StoreError(f"{folder}: not a folder of imported published weights (no "
                         f"{PUBLISHED_MANIFEST}); make one with `sleepfm import-weights "
                         f"sleepfm-clinical SLEEPFM_CLINICAL/sleepfm/checkpoints --out {folder}`.")
    if not (folder / part / "config.json").is_file():
        raise StoreError(f"{folder} holds no published {part} head; import the reference's "
                         "whole checkpoints/ folder into it.")
    heads, record = load_heads(folder / part, device=device)
    encoder, encoder_record = load_encoder(folder / "encoder", device=device)
    if record.get("encoder_id") != artifact_id(encoder_record):
        raise StoreError(f"{folder / part} was imported with another encoder than "
                         f"{folder / 'encoder'}; import the reference's checkpoints/ folder "
                         "again into an empty folder.")
    return heads[part], encoder
