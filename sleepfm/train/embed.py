"""Embed every record of a run directory: ``RUN_DIR/embeddings/<record_id>.h5``.

A night is cut into windows of the encoder's context (5 minutes); the last window is aligned to
the record's end (overlapping its neighbour) so every 5 s token gets an embedding from a full
context. Windows of consecutive records share batches, a DataLoader reads ahead from the store,
and a record's tokens are only held until the record is complete, so memory depends on the batch
size, never on the night's length. Each output file holds, per modality and ``fused``:

``epoch/<name>`` ``[n_epochs, D]`` (30 s), ``window/<name>`` ``[n_windows, D]`` (5 min),
``night/<name>`` ``[D]``, optionally ``token/<name>`` ``[n_tokens, D]``; attributes say which
modalities were present and which checkpoint made them.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..channels import MODALITIES
from ..data import collate_windows
from ..exceptions import StoreError
from ..io.store import RecordReader, Store
from ..runinfo import update_run_json
from ..utils import atomic_path, sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Window:
    record: int  # index into the readers
    start_s: float
    keep_from: int  # first token of this window that is new (the end-aligned window overlaps)


def plan_windows(duration_s: float, window_s: float, token_s: float) -> list[tuple[float, int]]:
    """Window starts covering ``duration_s`` (whole tokens), the last one end-aligned.

    Returns ``[(start_s, first new token), ...]``. A record shorter than one window is one
    window of its own (whole-epoch) length.
    """
    n_tokens = int(duration_s // token_s)
    per = int(round(window_s / token_s))
    if n_tokens == 0:
        return []
    if n_tokens <= per:
        return [(0.0, 0)]
    starts = [(k * per * token_s, 0) for k in range(n_tokens // per)]
    covered = (n_tokens // per) * per
    if covered < n_tokens:
        starts.append(((n_tokens - per) * token_s, covered - (n_tokens - per)))
    return starts


class _WindowList(Dataset):
    def __init__(self, readers: list[RecordReader], windows: list[_Window], lengths: list[float],
                 modalities):
        self.readers, self.windows, self.lengths, self.modalities = readers, windows, lengths, modalities

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        w = self.windows[i]
        r = self.readers[w.record]
        x = r.read(w.start_s, w.start_s + self.lengths[w.record],
                   modalities=[m for m in self.modalities if m in r.channels])
        return {"x": x, "record_id": r.record_id, "start_s": w.start_s, "index": i}


def _collate(samples: list[dict]) -> dict:
    batch = collate_windows(samples)
    batch["index"] = [s["index"] for s in samples]
    return batch


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


def summarise_tokens(tokens: np.ndarray, *, tokens_per_epoch: int = 6,
                     tokens_per_window: int = 60) -> dict[str, np.ndarray]:
    """Epoch (30 s), window (5 min) and night means of ``[n_tokens, D]`` tokens.

    Trailing tokens that do not fill an epoch are left out of epochs; the last window may be
    partial.
    """
    n_epochs = len(tokens) // tokens_per_epoch
    epochs = tokens[: n_epochs * tokens_per_epoch].reshape(n_epochs, tokens_per_epoch, -1).mean(1)
    n_win = -(-len(tokens) // tokens_per_window)
    windows = np.stack([tokens[k * tokens_per_window:(k + 1) * tokens_per_window].mean(0)
                        for k in range(n_win)])
    return {"epoch": epochs, "window": windows, "night": tokens.mean(0)}


def _write(path: Path, record_id: str, acc: _Accumulator, attrs: dict, tokens_per_epoch: int,
           tokens_per_window: int, keep_tokens: bool) -> None:
    present = [m for m in MODALITIES if acc.present.get(m)]
    names = {m: acc.tokens[m] for m in present}
    stacked = np.stack([names[m] for m in present])
    names["fused"] = stacked.mean(0)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, tok in names.items():
            parts = summarise_tokens(tok, tokens_per_epoch=tokens_per_epoch,
                                     tokens_per_window=tokens_per_window)
            if keep_tokens:
                parts["token"] = tok
            for level, arr in parts.items():
                f.create_dataset(f"{level}/{name}", data=arr.astype(np.float32))
        f.attrs.update({"record_id": record_id, "modalities": json.dumps(present),
                        **{k: json.dumps(v) if isinstance(v, (dict, list)) else v
                           for k, v in attrs.items()}})


def read_embeddings(path, *, level: str = "epoch", name: str = "fused") -> np.ndarray:
    """One array of an embeddings file, e.g. the fused 30 s epoch embeddings ``[n_epochs, D]``."""
    with h5py.File(path, "r") as f:
        key = f"{level}/{name}"
        if key not in f:
            raise StoreError(f"{path}: no {key!r}; it has {sorted(f'{g}/{d}' for g in f for d in f[g])}.")
        return f[key][()]


def embed_run(run_dir, *, checkpoint=None, batch_size: int = 16, device: str = "cpu",
              num_workers: int = 0, keep_tokens: bool = False, progress: bool = False,
              overwrite: bool = False) -> dict[str, str]:
    """Embed every record of ``RUN_DIR/hdf5`` into ``RUN_DIR/embeddings``; resumable.

    Parameters
    ----------
    checkpoint : path-like, optional
        Encoder directory (default ``RUN_DIR/checkpoints/encoder``).
    batch_size : int
        Windows per forward pass (across records).
    device : str
        ``cpu`` or ``cuda``; on CUDA the forward pass runs under bf16 autocast.

    Returns
    -------
    dict
        ``{record_id: "ok" | "skipped" | reason}``; records with none of the encoder's modalities
        are reported and left out.
    """
    from ..checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "encoder"
    encoder, meta = load_checkpoint(checkpoint, device=device)
    encoder.eval()
    cfg = encoder.config
    ckpt_id = sha256_file(next(checkpoint.glob("*.safetensors")))[:16]
    token_s, window_s = cfg.token_seconds, cfg.context_tokens * cfg.token_seconds
    store = Store(run_dir)
    out_dir = run_dir / "embeddings"
    out_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    readers, windows, lengths, accs = [], [], [], {}
    for rid in store.record_ids:
        out = out_dir / f"{rid}.h5"
        if not overwrite and out.is_file():
            with h5py.File(out, "r") as f:
                if f.attrs.get("checkpoint_id") == ckpt_id:
                    status[rid] = "skipped"
                    continue
        reader = store.open(rid)
        if not any(m in reader.channels for m in cfg.modalities):
            status[rid] = (f"no channel of the encoder's modalities {list(cfg.modalities)} "
                           f"(record has {reader.modalities})")
            logger.error("%s: %s", rid, status[rid])
            continue
        plan = plan_windows(reader.duration_s, window_s, token_s)
        if not plan:
            status[rid] = f"shorter than one {token_s:g} s token"
            continue
        k = len(readers)
        readers.append(reader)
        n_tokens = int(reader.duration_s // token_s)
        lengths.append(min(window_s, n_tokens * token_s))
        windows += [_Window(k, s, keep) for s, keep in plan]
        accs[k] = _Accumulator(n_tokens, len(plan), cfg.embed_dim)
    # Short records (one window shorter than the context) go in batches of their own length.
    order = sorted(range(len(windows)), key=lambda i: (lengths[windows[i].record] != window_s, i))
    windows = [windows[i] for i in order]
    dataset = _WindowList(readers, windows, lengths, cfg.modalities)
    loader = DataLoader(dataset, batch_sampler=_same_length_batches(windows, lengths, batch_size),
                        collate_fn=_collate, num_workers=num_workers)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(windows), desc="embed", unit="window")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda")
                else contextlib.nullcontext())
    attrs = {"checkpoint": str(checkpoint), "checkpoint_id": ckpt_id, "token_s": token_s,
             "epoch_s": token_s * cfg.tokens_per_epoch, "window_s": window_s,
             "encoder_config": cfg.to_dict()}
    with torch.inference_mode():
        for batch in loader:
            x = {m: t.to(device, non_blocking=True) for m, t in batch["x"].items()}
            mask = {m: t.to(device) for m, t in batch["mask"].items()}
            with autocast:
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
                    rid = readers[w.record].record_id
                    _write(out_dir / f"{rid}.h5", rid, acc, attrs, cfg.tokens_per_epoch,
                           cfg.context_tokens, keep_tokens)
                    status[rid] = "ok"
                    del accs[w.record]
            if bar:
                bar.update(len(batch["index"]))
    if bar:
        bar.close()
    update_run_json(run_dir, "embed", {"checkpoint": str(checkpoint), "checkpoint_id": ckpt_id,
                                       "batch_size": batch_size, "device": str(device),
                                       "records": status})
    return status


def _same_length_batches(windows: list[_Window], lengths: list[float], batch_size: int):
    batches, current, current_len = [], [], None
    for i, w in enumerate(windows):
        n = lengths[w.record]
        if current and (len(current) == batch_size or n != current_len):
            batches.append(current)
            current = []
        current.append(i)
        current_len = n
    if current:
        batches.append(current)
    return batches
