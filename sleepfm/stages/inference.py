"""Outputs of a trained head for records of a run: used by ``evaluate`` and ``predict``."""
from __future__ import annotations

import numpy as np
import torch

from ..exceptions import StoreError
from ..io.store import Store
from ..models.heads import WindowStagingNet
from ..rundir import RunDir
from ..spectral import SPECTRAL_VERSION
from ..vocab import EPOCH_S
from ..windows import collate_windows, plan_windows
from .task_data import current_inputs


@torch.no_grad()
def predict_windows(net: WindowStagingNet, reader, *, batch_size: int = 8) -> np.ndarray:
    """Stage probabilities ``[n_epochs, C]`` of one record with a fine-tuned encoder.

    ``reader`` is a store record (:class:`~sleepfm.io.store.RecordReader`) or anything that reads
    like one. Windows cover the record as in the embedding job (the last one end-aligned); a
    record shorter than a window is one window of its whole-epoch length.
    """
    cfg = net.encoder.config
    window_s = cfg.context_tokens * cfg.token_seconds
    per_epoch = cfg.tokens_per_epoch
    net.eval()
    n_epochs = int(reader.duration_s // EPOCH_S)
    proba = np.zeros((n_epochs, net.n_classes), dtype=np.float32)
    length = min(window_s, n_epochs * EPOCH_S)
    plan = plan_windows(n_epochs * EPOCH_S, window_s, cfg.token_seconds)
    mods = [m for m in cfg.modalities if m in reader.channels]
    device = next(net.parameters()).device
    for i in range(0, len(plan), batch_size):
        part = plan[i:i + batch_size]
        batch = collate_windows([{"x": reader.read(s, s + length, modalities=mods),
                                  "record_id": reader.record_id, "start_s": s} for s, _ in part])
        x = {m: t.to(device) for m, t in batch["x"].items()}
        mask = {m: t.to(device) for m, t in batch["mask"].items()}
        p = torch.softmax(net(x, mask), -1).cpu().numpy()
        for b, (s, keep) in enumerate(part):
            first = int(round(s / EPOCH_S))
            skip = keep // per_epoch
            proba[first + skip:first + p.shape[1]] = p[b, skip:]
    return proba


def predict_store(net: WindowStagingNet, store: Store, record_ids, *,
                  batch_size: int = 8) -> list[np.ndarray]:
    """:func:`predict_windows` of records of a store."""
    return [predict_windows(net, store.open(rid), batch_size=batch_size) for rid in record_ids]


def head_features(record: dict) -> str:
    """The input a saved head takes: ``embedding``, ``spectral`` or ``both`` (heads saved before
    spectral features existed take embeddings)."""
    return record.get("features") or "embedding"


def spectral_kinds(record: dict) -> tuple[str, ...] | None:
    """The channel kinds of a saved head's spectral features (None: it takes none).

    Raises
    ------
    StoreError
        The head's spectral features were defined by another version of sleepfm.
    """
    spec = record.get("spectral")
    if head_features(record) == "embedding" or not spec:
        return None
    if spec.get("version") != SPECTRAL_VERSION:
        raise StoreError(f"the {record['task']} head was trained on spectral features of version "
                         f"{spec.get('version')}, and this sleepfm computes version "
                         f"{SPECTRAL_VERSION}; run `sleepfm finetune {record['task']}` again.")
    return tuple(spec["kinds"])


def describe_input(record: dict) -> str:
    """What a saved head takes per epoch, in words."""
    features = head_features(record)
    spec = record.get("spectral") or {}
    n_spec = len(spec.get("names", []))
    kinds = "/".join(k.upper() for k in spec.get("kinds", []))
    if features == "spectral":
        return f"{n_spec} spectral features of {kinds}"
    if features == "both":
        return f"{record['embedding']} embeddings + {n_spec} spectral features of {kinds}"
    return f"{record['embedding']} embeddings"


def check_head_input(record: dict, X) -> None:
    """Raise when ``X`` is not what the saved head takes (e.g. embeddings alone given to a head
    trained with spectral features beside them): never predict from the wrong columns."""
    expected = record.get("n_features")
    widths = sorted({int(np.shape(x)[1]) for x in X})
    if expected is None or not X or widths == [expected]:
        return
    features = head_features(record)
    how = ("sleepfm computes them from the run's store records; pass "
           f"load_task_data(run, task, features={features!r}).X" if features != "embedding"
           else "use the embeddings of the encoder the head was trained on")
    raise StoreError(f"the {record['task']} head takes {expected} values per epoch "
                     f"({describe_input(record)}, features={features!r}), but the input has "
                     f"{widths}; {how}.")


def head_outputs(heads: dict, record: dict, *, X=None, store: Store | None = None,
                 record_ids=None) -> dict:
    """Per-record outputs of saved heads (``record`` is the head artefact's ``config.json``).

    Returns ``{"proba": [...]}`` for staging (``[n_epochs, C]`` each); for events also
    ``"sleep"`` (predicted asleep per epoch) and ``"ahi"`` (estimated AHI per night). Heads on
    frozen inputs take ``X`` per record: what the head was trained on (:func:`head_features`;
    :func:`~sleepfm.stages.task_data.load_task_data` with that ``features`` gives it); a head
    fine-tuned end to end reads ``record_ids`` from ``store``.

    Raises
    ------
    StoreError
        ``X`` does not have the head's input columns (:func:`check_head_input`).
    """
    if record["task"] == "staging" and record["mode"] == "finetune":
        return {"proba": predict_store(heads["window"], store, record_ids)}
    X = list(X)
    check_head_input(record, X)
    if record["task"] == "staging":
        return {"proba": heads["staging"].predict_proba(X)}
    proba = heads["events"].predict_proba(list(X))
    asleep = [p.argmax(1) == 1 for p in heads["sleep"].predict_proba(list(X))]
    stages = [np.where(a, 2, 0) for a in asleep]
    return {"proba": proba, "sleep": asleep, "ahi": heads["ahi"].predict(proba, stages=stages)}


def check_inputs(run, record: dict) -> None:
    """Raise when what a head was trained on (the embeddings or store records, and the labels,
    of its training and validation nights) changed since: the head is out of date."""
    recorded = record.get("inputs", {})
    current = current_inputs(run, record["task"], list(recorded),
                             with_embeddings=record["mode"] != "finetune",
                             features=head_features(record),
                             spectral_kinds=spectral_kinds(record) or ())
    changed = sorted(r for r, fp in recorded.items() if current[r] != fp)
    if changed:
        raise StoreError(f"{RunDir(run).head_dir(record['task'])}: the head was trained on data "
                         f"that changed since ({len(changed)} nights, e.g. "
                         f"{', '.join(changed[:5])}: their embeddings, store records or labels "
                         "are newer); run "
                         f"`sleepfm finetune {record['task']} --run {RunDir(run).path}` again.")


def check_encoder(record: dict, embeddings_id: str, where) -> None:
    """Raise when embeddings were made by another encoder than the one a head was trained on."""
    expected = record.get("encoder_checkpoint", {}).get("id")
    if expected and embeddings_id and embeddings_id != expected:
        raise StoreError(f"{where}: the embeddings were made by encoder {embeddings_id}, but the "
                         f"head was trained on embeddings of {expected}; run `sleepfm embed` and "
                         "`sleepfm finetune` again on the current encoder.")
