"""``sleepfm embed``: every record of the run's store → ``RUN_DIR/embeddings/<record_id>.h5``.

A night is cut into windows of the encoder's context (5 minutes); the last window is aligned to
the record's end (overlapping its neighbour) so every 5 s token gets an embedding from a full
context. Windows of consecutive records share batches, a DataLoader reads ahead from the store,
and a record's tokens are only held until the record is complete, so memory depends on the batch
size, never on the night's length. The file layout is :mod:`sleepfm.io.embeddings`.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import as_completed

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..artifacts import load_encoder
from ..channels import KIND_TO_MODALITY, MODALITIES, OSF_LEAD_KINDS, OSF_LEADS
from ..checkpoint import artifact_id
from ..config import EmbedConfig, load_config
from ..data import CoverWindows
from ..exceptions import InvalidParameterError
from ..io.embeddings import read_embedding_attrs, write_embeddings
from ..lead_epochs import n_epochs, record_leads
from ..models import SleepFMReference, ViT1D
from ..models.precision import inference_autocast
from ..rundir import RunDir
from ..utils import fingerprint, progress_bar
from ..vocab import EPOCH_S, WINDOW_S
from ..windows import fuse_tokens, summarise_tokens
from .staging_model import lead_epoch_embeddings
from .cluster import executor

logger = logging.getLogger(__name__)


class _Accumulator:
    """Collects one record's tokens window by window; complete when every window arrived."""

    def __init__(self, n_tokens: int, n_windows: int, dim: int):
        self.tokens: dict[str, np.ndarray] = {}
        self.present: dict[str, bool] = {}
        self.n_tokens, self.remaining, self.dim = n_tokens, n_windows, dim

    def add(self, name: str, first_token: int, tokens: np.ndarray, present: bool) -> None:
        if name not in self.tokens:
            self.tokens[name] = np.zeros((self.n_tokens, self.dim), dtype=np.float32)
        self.tokens[name][first_token:first_token + len(tokens)] = tokens
        self.present[name] = self.present.get(name, False) or present


def _window_kind(encoder) -> str:
    """How an encoder's 5-minute window embeddings are made (recorded in each file)."""
    return "attention pool" if isinstance(encoder, SleepFMReference) else "token mean"


def _levels(acc: _Accumulator, encoder, keep_tokens: bool) -> tuple[dict, list[str]]:
    """Per level and modality (+ ``fused``), the arrays of a record's embedding file. The
    released SleepFM encoder's windows are its own 5-minute embeddings (attention-pooled; their
    ``fused`` is the mean of the modalities'), other encoders' the mean of the window's tokens."""
    cfg, pooled = encoder.config, _window_kind(encoder) == "attention pool"
    present = [m for m in MODALITIES if acc.present.get(m)]
    named = {m: acc.tokens[m] for m in present}
    named["fused"] = fuse_tokens(named)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, tok in named.items():
        parts = summarise_tokens(tok, tokens_per_epoch=cfg.tokens_per_epoch,
                                 tokens_per_window=cfg.context_tokens)
        if pooled:
            parts["window"] = (encoder.night_windows(tok) if name != "fused" else
                               np.stack([arrays["window"][m] for m in present]).mean(0))
        if keep_tokens:
            parts["token"] = tok
        for level, arr in parts.items():
            arrays.setdefault(level, {})[name] = arr
    return arrays, present


def embed_records(run: RunDir, readers, encoder, config: EmbedConfig, attrs: dict, *,
                  progress: bool = False) -> Iterator[str]:
    """Embed whole records with ``encoder`` and write their files; yields each record id when its
    file is written. Windows are batched within a record (:class:`~sleepfm.data.CoverWindows`),
    so the result is the same however the records are grouped. A ViT-1D encoder embeds each 30 s
    epoch of the OSF leads instead (:func:`embed_lead_records`)."""
    if isinstance(encoder, ViT1D):
        yield from embed_lead_records(run, readers, encoder, config, attrs, progress=progress)
        return
    cfg = encoder.config
    token_s, window_s = cfg.token_seconds, cfg.context_tokens * cfg.token_seconds
    dataset = CoverWindows(readers, window_s=window_s, token_s=token_s, modalities=cfg.modalities)
    n_windows = Counter(w.record for w in dataset.windows)
    accs = {k: _Accumulator(int(r.duration_s // token_s), n_windows[k], cfg.embed_dim)
            for k, r in enumerate(readers)}
    loader = DataLoader(dataset, batch_sampler=dataset.batches(config.batch_size),
                        collate_fn=CoverWindows.collate, num_workers=config.num_workers)
    attrs = {**attrs, "token_s": token_s, "epoch_s": token_s * cfg.tokens_per_epoch,
             "window_s": window_s, "encoder_config": cfg.to_dict()}
    with torch.inference_mode(), progress_bar(len(dataset), "embed", "window", progress) as bar:
        for batch in loader:
            x = {m: t.to(config.device, non_blocking=True) for m, t in batch["x"].items()}
            mask = {m: t.to(config.device) for m, t in batch["mask"].items()}
            with inference_autocast(config.device):
                out = encoder(x, mask)
            for b, i in enumerate(batch["index"]):
                w = dataset.windows[i]
                acc = accs[w.record]
                first = int(round(w.start_s / token_s)) + w.keep_from
                for m, tok in out.tokens.items():
                    acc.add(m, first, tok[b, w.keep_from:].float().cpu().numpy(),
                            bool(out.present[m][b]))
                acc.remaining -= 1
                if acc.remaining == 0:
                    reader = readers[w.record]
                    arrays, present = _levels(acc, encoder, config.keep_tokens)
                    write_embeddings(run.embedding_file(reader.record_id), arrays, {
                        "record_id": reader.record_id, "modalities": present, **attrs,
                        "store_fingerprint": reader.fingerprint,
                        "fingerprint": fingerprint(reader.fingerprint, attrs["checkpoint_id"])})
                    del accs[w.record]
                    yield reader.record_id
            bar.update(len(batch["index"]))


def embed_lead_records(run: RunDir, readers, encoder: ViT1D, config: EmbedConfig, attrs: dict,
                       *, progress: bool = False) -> Iterator[str]:
    """Embed every 30 s epoch of each record with a ViT-1D (OSF leads, masked where absent) and
    write the ``fused`` epoch, window (5 min) and night embeddings; yields each record id when its
    file is written. ``config.batch_size`` epochs of one record are read and encoded at a time."""
    cfg = encoder.config
    cmap = run.channel_map()
    per_window = int(round(WINDOW_S / EPOCH_S))
    attrs = {**attrs, "epoch_s": EPOCH_S, "window_s": WINDOW_S, "encoder_config": cfg.to_dict()}
    total = sum(n_epochs(r) for r in readers)
    with progress_bar(total, "embed", "epoch", progress) as bar:
        for reader in readers:
            layout = record_leads(reader, channel_map=cmap)
            out = lead_epoch_embeddings(encoder, reader, layout, batch_size=config.batch_size,
                                        device=config.device, done=bar.update)
            parts = summarise_tokens(out, tokens_per_epoch=1, tokens_per_window=per_window)
            present = [m for m in cfg.modalities if any(
                KIND_TO_MODALITY[OSF_LEAD_KINDS[lead]] == m and slot is not None
                for lead, slot in zip(OSF_LEADS, layout.slots))]
            write_embeddings(run.embedding_file(reader.record_id),
                             {level: {"fused": arr} for level, arr in parts.items()}, {
                                 "record_id": reader.record_id, "modalities": present, **attrs,
                                 "leads": layout.describe(), "lead_substitutes": layout.substitutes,
                                 "store_fingerprint": reader.fingerprint,
                                 "fingerprint": fingerprint(reader.fingerprint,
                                                            attrs["checkpoint_id"])})
            yield reader.record_id


# Encoders loaded by this worker process of a cluster, by (artefact, checksum, device).
_WORKER_ENCODERS: dict[tuple, object] = {}


def _embed_task(run_path, record_id: str, ckpt_dir, config: EmbedConfig, attrs: dict) -> str:
    """One record embedded on a cluster worker (which loads each encoder once)."""
    key = (str(ckpt_dir), attrs["checkpoint_id"], config.device)
    if key not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[key] = load_encoder(ckpt_dir, device=config.device)[0]
    run = RunDir(run_path)
    reader = run.store().open(record_id)
    return next(embed_records(run, [reader], _WORKER_ENCODERS[key], config, attrs))


def embed(run_dir, config: EmbedConfig | str | None = None, *, checkpoint=None,
          progress: bool = False, **overrides) -> dict[str, str]:
    """Embed every record of the run's store into ``RUN_DIR/embeddings``; resumable.

    Parameters
    ----------
    run_dir : path-like or RunDir
        A run directory after ``sleepfm preprocess`` (and ``pretrain``).
    config : EmbedConfig, dict or YAML path, optional
        Settings (``batch_size``, ``device``, ``num_workers``, ``keep_tokens``, ``overwrite``);
        ``**overrides`` replace single fields.
    checkpoint : path-like, optional
        Encoder artefact (default ``RUN_DIR/checkpoints/encoder``).
    progress : bool, default=False
        Show a progress bar.

    Returns
    -------
    dict
        ``{record_id: "ok" | "updated" | "skipped" | reason}``: embedded, embedded again because
        its store record or the encoder changed since (each embeddings file records the
        fingerprint of the store record and the encoder it was made from), or up to date;
        records with none of the encoder's modalities are reported (logged as ``SKIPPED``) and
        left out.

    Raises
    ------
    StoreError
        No store, no encoder, or records stored at another rate than the encoder's.

    Examples
    --------
    >>> status = embed("runs/demo", batch_size=32)
    """
    config = load_config(EmbedConfig, config, **overrides)
    run = RunDir(run_dir)
    with run.lock("embed"):
        store = run.store()
        ckpt_dir = checkpoint if checkpoint is not None else run.encoder_dir
        run.encoder_record(ckpt_dir)  # a missing encoder names the stage to run first
        encoder, record = load_encoder(ckpt_dir, device=config.device)
        cfg = encoder.config
        ckpt_id = artifact_id(record)
        vit = isinstance(encoder, ViT1D)
        if vit and config.keep_tokens:
            raise InvalidParameterError("a ViT-1D encoder has no 5 s tokens (its finest "
                                        "embedding is the 30 s epoch); drop --tokens.")
        shortest = EPOCH_S if vit else cfg.token_seconds
        if not vit:
            store.check_sample_rate(cfg.sampling_rate)
        cmap = run.channel_map()
        run.embeddings_dir.mkdir(parents=True, exist_ok=True)
        status: dict[str, str] = {}
        readers, out_of_date = [], set()
        for rid in store.record_ids:
            reader = store.open(rid)
            out = run.embedding_file(rid)
            if out.is_file() and not config.overwrite:
                made_from = read_embedding_attrs(out)
                if made_from.get("checkpoint_id") == ckpt_id and \
                        made_from.get("windows", "token mean") == _window_kind(encoder) and \
                        made_from.get("store_fingerprint") == reader.fingerprint != "":
                    status[rid] = "skipped"
                    continue
                out_of_date.add(rid)
            if vit and not record_leads(reader, channel_map=cmap).present.any():
                status[rid] = (f"no channel fills an OSF lead {list(OSF_LEADS)} (record has "
                               f"{reader.channels})")
            elif not vit and not any(m in reader.channels for m in cfg.modalities):
                status[rid] = (f"no channel of the encoder's modalities {list(cfg.modalities)} "
                               f"(record has {reader.modalities})")
            elif reader.duration_s < shortest:
                status[rid] = f"shorter than one {shortest:g} s {'epoch' if vit else 'token'}"
            else:
                readers.append(reader)
                continue
            logger.error("SKIPPED %s: %s", rid, status[rid])
        attrs = {"checkpoint": str(ckpt_dir), "checkpoint_id": ckpt_id,
                 "windows": _window_kind(encoder)}
        if config.scheduler:
            with executor(scheduler=config.scheduler) as pool, \
                    progress_bar(len(readers), "embed", "record", progress) as bar:
                jobs = {pool.submit(_embed_task, run.path, r.record_id, ckpt_dir, config, attrs):
                        r.record_id for r in readers}
                for fut in as_completed(jobs):
                    rid = jobs[fut]
                    try:
                        fut.result()
                        status[rid] = "updated" if rid in out_of_date else "ok"
                    except Exception as err:  # noqa: BLE001 - reported, the others go on
                        status[rid] = f"its worker was lost ({type(err).__name__}: {err}); run again"
                        logger.error("FAILED %s: %s", rid, status[rid])
                    bar.update()
        else:
            for rid in embed_records(run, readers, encoder, config, attrs, progress=progress):
                status[rid] = "updated" if rid in out_of_date else "ok"
        updated = sorted(r for r, v in status.items() if v == "updated")
        if updated:
            logger.warning("embedded again %d records whose store record or encoder changed: %s",
                           len(updated), ", ".join(updated[:5]))
        run.record_stage("embed", {"checkpoint": str(ckpt_dir), "checkpoint_id": ckpt_id,
                                   "config": config.to_dict(), "records": status})
        return status
