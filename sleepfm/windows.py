"""Windows that cover whole records, and what their 5 s tokens sum up to.

The arithmetic the embedding stage and streaming prediction share, so both cut a night into the
same windows and pool its tokens the same way: :func:`plan_windows` (the last window
end-aligned), :func:`collate_windows` (windows of several montages in one batch),
:func:`fuse_tokens` (the mean of the present modalities) and :func:`summarise_tokens` (epoch,
window and night means). Arrays and tensors in, arrays and tensors out; no files, no Lightning.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from .channels import MODALITIES
from .exceptions import StoreError


def plan_windows(duration_s: float, window_s: float, token_s: float) -> list[tuple[float, int]]:
    """Window starts covering ``duration_s`` (whole tokens), the last one end-aligned.

    Returns ``[(start_s, first new token), ...]``. A record shorter than one window is one
    window of its own (whole-token) length.
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


def collate_windows(samples: list[dict], modalities=MODALITIES) -> dict:
    """Stack windows, padding channels per modality.

    Each sample is ``{"x": {mod: [C, T]}, "record_id": str, "start_s": float}``; the batch is
    ``{"x": {mod: [B, C, T]}, "mask": {mod: [B, C] bool}, "record_id": [...], "start_s": [B]}``,
    where a record without a modality has an all-False mask row.
    """
    n_time = {s["x"][m].shape[1] for s in samples for m in s["x"]}
    if len(n_time) > 1:
        raise StoreError(f"windows of different lengths in one batch: {sorted(n_time)} samples.")
    t = n_time.pop() if n_time else 0
    x, mask = {}, {}
    for mod in modalities:
        c = max((s["x"][mod].shape[0] for s in samples if mod in s["x"]), default=0)
        if c == 0:
            continue
        xb = torch.zeros(len(samples), c, t)
        mb = torch.zeros(len(samples), c, dtype=torch.bool)
        for b, s in enumerate(samples):
            if mod in s["x"]:
                k = s["x"][mod].shape[0]
                xb[b, :k] = torch.from_numpy(s["x"][mod])
                mb[b, :k] = True
        x[mod], mask[mod] = xb, mb
    return {"x": x, "mask": mask, "record_id": [s["record_id"] for s in samples],
            "start_s": torch.tensor([s["start_s"] for s in samples], dtype=torch.float64)}


def fuse_tokens(tokens: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ``fused`` tokens of a night: the mean of its present modalities' ``[n_tokens, D]``
    tokens (summed in :data:`~sleepfm.channels.MODALITIES` order)."""
    return np.stack([tokens[m] for m in MODALITIES if m in tokens]).mean(0)


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
