"""Heads on a run's embeddings: sleep staging and respiratory/arousal events.

``finetune_run(run_dir, "staging" | "events", config)`` loads the 30 s epoch embeddings and the
labels of every record that has both, splits the records by *subject* (``subject_split`` on the
run's cohort table; the split is saved to ``RUN_DIR/heads/<task>/split.json`` and reused by
``sleepfm evaluate``), keeps a label fraction or a few-shot subset of the training subjects, trains
the head and saves it like an encoder: ``head.safetensors`` (weights) + ``head.json`` (options,
classes, mode, embedding, encoder checkpoint id, split, training curve). Nothing is pickled.

Modes
-----
``lstm``      :class:`~sleepfm.models.heads.StagingHead` (SleepFM's 2-layer LSTM over the night)
              on frozen embeddings.
``linear``    :class:`~sleepfm.models.heads.LinearProbe` on frozen embeddings.
``fewshot``   the LSTM head trained on ``shots`` nights (``shot_unit="nights"``) or ``shots``
              labelled epochs per class (``shot_unit="epochs"``).
``finetune``  the whole encoder, unfrozen, from the HDF5 store: encoder → 30 s epoch pooling →
              LSTM over the 10 epochs of each 5-minute window, started from the run's encoder
              (:class:`StagingFinetuneModule`, Lightning). Staging only. The fine-tuned encoder is
              saved beside the head (``heads/staging/encoder/``).

The events task predicts, per epoch, apnea/hypopnea, arousal and desaturation
(:class:`~sleepfm.models.heads.EventHead`), a sleep/wake probe for the hours of sleep, and per
night the AHI (:class:`~sleepfm.models.heads.AHIRegressor`, events per hour of *predicted* sleep)
and its severity grade.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..eval.metrics import STAGE_SCHEMES, group_stages
from ..exceptions import LabelError, StoreError
from ..io.cohort import subject_map
from ..io.labels import EPOCH_S, events_to_epochs, read_events, read_stages
from ..models.heads import (
    AHIRegressor,
    EventHead,
    LinearProbe,
    StagingHead,
    head_from_state,
)
from ..runinfo import update_run_json
from ..splits import few_shot, few_shot_epochs, label_fraction, subject_split
from ..utils import atomic_path, check_option, write_text_atomic

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("staging", "events")
MODES: tuple[str, ...] = ("lstm", "linear", "fewshot", "finetune")
#: Event outputs of the events task (apnea and hypopnea are one output).
EVENT_NAMES: tuple[str, ...] = ("apnea_hypopnea", "arousal", "desaturation")
HEAD_FORMAT = "sleepfm-head"
HEAD_WEIGHTS = "head.safetensors"
HEAD_META = "head.json"
SPLIT_NAME = "split.json"


@dataclass
class FinetuneConfig:
    """Settings of ``sleepfm finetune`` (one field per command-line option).

    Attributes
    ----------
    mode : {"lstm", "linear", "fewshot", "finetune"}, default="lstm"
        See the module docstring.
    scheme : {"aasm5", "osf4"}, default="aasm5"
        Stage classes (staging): the five AASM stages or W / light / deep / REM.
    embedding : str, default="fused"
        Which epoch embedding to train on: ``fused`` or a modality (``BAS``, ``ECG``, ...).
    label_fraction : float, default=1.0
        Fraction of the training *subjects* whose labels are used (0 < f <= 1).
    shots : int, optional
        Few-shot size (``mode="fewshot"``): nights, or labelled epochs per class.
    shot_unit : {"nights", "epochs"}, default="nights"
    test_size, val_size : float, default=0.2 and 0.1
        Fractions of subjects held out for testing and for early stopping.
    seed : int, default=0
        Seed of the split, the subsets and the training.
    bidirectional : bool, default=False
        Bidirectional LSTM (offline staging with future context).
    epochs : int, optional
        Training epochs of the head (default: the head's own; 3 for ``finetune``).
    hidden : int, optional
        Hidden size of the head (default: the head's own; 64 for ``finetune``).
    lr : float, optional
        Learning rate (default: the head's own; 1e-4 for the encoder in ``finetune``).
    batch_size : int, default=8
        Windows per step (``finetune``).
    skip_unlabelled : bool, default=False
        Skip records with embeddings but no usable label file (reported) instead of failing.
    device : str, default="cpu"
    """

    mode: str = "lstm"
    scheme: str = "aasm5"
    embedding: str = "fused"
    label_fraction: float = 1.0
    shots: int | None = None
    shot_unit: str = "nights"
    test_size: float = 0.2
    val_size: float = 0.1
    seed: int = 0
    bidirectional: bool = False
    epochs: int | None = None
    hidden: int | None = None
    lr: float | None = None
    batch_size: int = 8
    skip_unlabelled: bool = False
    device: str = "cpu"

    def validate(self, task: str) -> None:
        check_option("task", task, TASKS)
        check_option("mode", self.mode, MODES)
        check_option("scheme", self.scheme, STAGE_SCHEMES)
        check_option("shot_unit", self.shot_unit, ("nights", "epochs"))
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"'label_fraction' must be in (0, 1], got {self.label_fraction}.")
        if self.mode == "fewshot" and (self.shots is None or self.shots < 1):
            raise ValueError("mode 'fewshot' needs shots >= 1 (--shots K): K nights, or K epochs "
                             "per class with --shot-unit epochs.")
        if self.mode != "fewshot" and self.shots is not None:
            raise ValueError(f"'shots' is only used by mode 'fewshot' (got mode {self.mode!r}); "
                             "use --label-fraction for the other modes.")
        if task == "events" and self.mode == "finetune":
            raise ValueError("mode 'finetune' (end-to-end encoder training) is available for the "
                             "staging task only; use --mode lstm or linear for events.")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass
class TaskData:
    """Labelled nights of a run, aligned with their epoch embeddings.

    Attributes
    ----------
    record_ids, subjects : list of str
        One entry per night, sorted by record id.
    X : list of ndarray [n_epochs_i, D]
        Epoch embeddings (empty arrays when loaded without embeddings).
    y : list of ndarray
        Stages ``[n_epochs_i]`` (in the chosen scheme) for staging; ``[n_epochs_i, 3]`` event
        flags for events.
    stages : list of ndarray [n_epochs_i]
        AASM stages (both tasks; the events task uses them for the true sleep time).
    ahi : ndarray or None
        True AHI per night (events task): apneas + hypopneas starting in a scored sleep epoch
        per hour of scored sleep; NaN for a night without sleep.
    skipped : dict
        ``{record_id: reason}`` of records left out (``skip_unlabelled``).
    checkpoint_id : str
        Id of the encoder that made the embeddings.
    """

    record_ids: list[str]
    subjects: list[str]
    X: list[np.ndarray]
    y: list[np.ndarray]
    stages: list[np.ndarray]
    ahi: np.ndarray | None = None
    skipped: dict = field(default_factory=dict)
    checkpoint_id: str = ""

    def __len__(self) -> int:
        return len(self.record_ids)

    def __repr__(self) -> str:
        n = sum(len(s) for s in self.stages)
        return (f"<TaskData | {len(self)} nights, {len(set(self.subjects))} subjects, {n} epochs, "
                f"{len(self.skipped)} skipped>")

    def take(self, idx) -> "TaskData":
        idx = [int(i) for i in idx]
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return TaskData(pick(self.record_ids), pick(self.subjects), pick(self.X) if self.X else [],
                        pick(self.y), pick(self.stages),
                        None if self.ahi is None else self.ahi[idx], {}, self.checkpoint_id)


def _fit_length(labels: np.ndarray, n: int, record_id: str, what: str, fill) -> np.ndarray:
    """Labels trimmed/padded to ``n`` epochs; more than one epoch apart is an error."""
    if abs(len(labels) - n) > 1:
        raise LabelError(
            f"{record_id}: {what} has {len(labels)} epochs but the recording has {n} (30 s epochs "
            "of the embeddings/store); they differ by more than one epoch, so the label file does "
            "not belong to this recording. Fix or remove the label file and preprocess again."
        )
    if len(labels) > n:
        return labels[:n]
    if len(labels) < n:
        pad = np.full((n - len(labels),) + labels.shape[1:], fill, dtype=labels.dtype)
        return np.concatenate([labels, pad])
    return labels


def true_ahi(events, stages: np.ndarray, *, epoch_s: float = EPOCH_S) -> float:
    """Apneas + hypopneas starting in a scored sleep epoch, per hour of scored sleep (NaN: none)."""
    sleep = stages >= 1
    hours = sleep.sum() * epoch_s / 3600.0
    if hours <= 0:
        return float("nan")
    resp = events[events["type"].isin(["apnea", "hypopnea"])]
    idx = (resp["onset"].to_numpy() // epoch_s).astype(int)
    idx = idx[(idx >= 0) & (idx < len(stages))]
    return float(sleep[idx].sum() / hours)


def load_task_data(run_dir, task: str, *, embedding: str = "fused", scheme: str = "aasm5",
                   skip_unlabelled: bool = False, record_ids=None,
                   with_embeddings: bool = True) -> TaskData:
    """Epoch embeddings and labels of every record of ``RUN_DIR/embeddings`` that has both.

    Parameters
    ----------
    run_dir : path-like
        Run directory after ``sleepfm embed`` (or after ``preprocess`` with
        ``with_embeddings=False``: then the record list and epoch counts come from the store).
    task : {"staging", "events"}
    embedding : str, default="fused"
    scheme : {"aasm5", "osf4"}, default="aasm5"
    skip_unlabelled : bool, default=False
        Leave out (and report in ``skipped``) records whose labels are missing or do not match,
        instead of raising.
    record_ids : list of str, optional
        Only these records.
    with_embeddings : bool, default=True

    Returns
    -------
    TaskData

    Raises
    ------
    LabelError
        A record without a label file (naming it and the expected path), or whose labels differ
        from the recording by more than one epoch (naming both lengths).
    StoreError
        No embeddings, an unknown embedding name, or embeddings made by different encoders.
    """
    check_option("task", task, TASKS)
    run_dir = Path(run_dir)
    emb_dir = run_dir / "embeddings"
    if with_embeddings:
        files = sorted(emb_dir.glob("*.h5")) if emb_dir.is_dir() else []
        if not files:
            raise StoreError(f"{emb_dir}: no embeddings; run `sleepfm embed --run {run_dir}` first.")
        ids = [p.stem for p in files]
    else:
        from ..io.store import Store

        ids = Store(run_dir).record_ids
    if record_ids is not None:
        wanted = set(record_ids)
        missing = sorted(wanted - set(ids))
        if missing:
            raise StoreError(f"{run_dir}: records {missing[:5]} have no embeddings/store file.")
        ids = [r for r in ids if r in wanted]
    out = TaskData([], [], [], [], [], [] if task == "events" else None)
    ahis = []
    ckpt_ids = {}
    for rid in ids:
        try:
            if with_embeddings:
                path = emb_dir / f"{rid}.h5"
                with h5py.File(path, "r") as f:
                    key = f"epoch/{embedding}"
                    if key not in f:
                        have = sorted(k.split("/")[1] for k in f["epoch"]) if "epoch" in f else []
                        raise StoreError(f"{path.name}: no {embedding!r} epoch embedding; it has "
                                         f"{have}. Choose one with --embedding.")
                    x = f[key][()].astype(np.float32)
                    ckpt_ids[rid] = str(f.attrs.get("checkpoint_id", ""))
                n = x.shape[0]
            else:
                from ..io.store import Store

                x = np.zeros((0, 0), np.float32)
                n = int(Store(run_dir).open(rid).duration_s // EPOCH_S)
            stage_path = run_dir / "labels" / f"{rid}.csv"
            if not stage_path.is_file():
                raise LabelError(
                    f"{rid}: has embeddings but no stage label file ({stage_path}); add "
                    f"<record_id>.csv beside the recording and preprocess again, or pass "
                    f"--skip-unlabelled to leave it out."
                )
            stages = _fit_length(read_stages(stage_path).stages.astype(np.int64), n, rid,
                                 f"label file {stage_path.name}", -1)
            if task == "staging":
                y = group_stages(stages, scheme)
            else:
                ev_path = run_dir / "labels" / f"{rid}.events.csv"
                if not ev_path.is_file():
                    raise LabelError(
                        f"{rid}: has embeddings but no event label file ({ev_path}); add "
                        f"<record_id>.events.csv (onset,duration,type) and preprocess again, or "
                        f"pass --skip-unlabelled to leave it out."
                    )
                events = read_events(ev_path)
                flags = events_to_epochs(events, n).astype(np.int64)  # apnea, hypopnea, arousal, desat
                y = np.column_stack([flags[:, 0] | flags[:, 1], flags[:, 2], flags[:, 3]])
                y[stages < 0] = -1  # unscored epochs are unknown
        except (LabelError, StoreError) as err:
            if skip_unlabelled and isinstance(err, LabelError):
                out.skipped[rid] = str(err)
                logger.warning("skipped %s: %s", rid, err)
                continue
            raise
        if not np.any(stages >= 0):
            reason = f"{rid}: no scored epoch in its labels"
            if skip_unlabelled:
                out.skipped[rid] = reason
                continue
            raise LabelError(reason + "; every epoch is unscored (-1). Pass --skip-unlabelled.")
        out.record_ids.append(rid)
        out.X.append(x)
        out.y.append(np.asarray(y))
        out.stages.append(stages)
        if task == "events":
            ahis.append(true_ahi(events, stages))
    if not out.record_ids:
        raise LabelError(f"{run_dir}: no record has both embeddings and {task} labels "
                         f"(skipped: {out.skipped}).")
    subjects = subject_map(run_dir, out.record_ids)
    out.subjects = [str(subjects[r]) for r in out.record_ids]
    if task == "events":
        out.ahi = np.asarray(ahis, dtype=np.float64)
    if not with_embeddings:
        out.X = []
    distinct = sorted(set(ckpt_ids[r] for r in out.record_ids)) if ckpt_ids else []
    if len(distinct) > 1:
        raise StoreError(f"{emb_dir}: embeddings were made by different encoders ({distinct}); "
                         f"re-run `sleepfm embed --run {run_dir} --overwrite`.")
    out.checkpoint_id = distinct[0] if distinct else ""
    return out


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------
def make_split(record_ids, subjects, *, test_size: float = 0.2, val_size: float = 0.1,
               seed: int = 0) -> dict:
    """A subject-level train/val/test split as a JSON-able dict of record ids.

    With fewer than three subjects there is no validation set; with fewer than two, an error.
    """
    n_subjects = len(set(subjects))
    if n_subjects < 2:
        raise LabelError(f"only {n_subjects} subject(s) with labels; a held-out test set needs at "
                         "least two subjects.")
    if n_subjects < 3 and val_size > 0:
        logger.warning("only %d subjects: no validation set", n_subjects)
        val_size = 0.0
    idx = subject_split(list(subjects), test_size=test_size, val_size=val_size, seed=seed)
    split = {part: [record_ids[i] for i in idx[part]] for part in ("train", "val", "test")}
    return {"seed": seed, "test_size": test_size, "val_size": val_size, **split,
            "subjects": {r: s for r, s in zip(record_ids, subjects)}}


def read_split(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no split; run `sleepfm finetune` for this task first.")
    split = json.loads(path.read_text())
    for part in ("train", "val", "test"):
        if part not in split:
            raise StoreError(f"{path}: not a split file (no {part!r} list).")
    return split


def check_split(split: dict) -> None:
    """Raise if a subject's nights are on both sides of the split."""
    subj = split["subjects"]
    sides = {part: {subj[r] for r in split[part]} for part in ("train", "val", "test")}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        both = sides[a] & sides[b]
        if both:
            raise LabelError(f"subjects {sorted(both)[:5]} are in both {a} and {b}; the split "
                             "must be by subject.")


def _indices(data: TaskData, records) -> list[int]:
    pos = {r: i for i, r in enumerate(data.record_ids)}
    missing = [r for r in records if r not in pos]
    if missing:
        raise LabelError(f"split names records {missing[:5]} that have no labelled embeddings; "
                         "re-run finetune without --split to make a new split.")
    return [pos[r] for r in records]


# --------------------------------------------------------------------------------------------
# saving and loading heads
# --------------------------------------------------------------------------------------------
def save_head(directory, components: dict, info: dict) -> Path:
    """Save fitted heads: ``head.safetensors`` (tensors as ``<component>.<name>``) + ``head.json``.

    Parameters
    ----------
    directory : path-like
        ``RUN_DIR/heads/<task>``.
    components : dict of str to head
        Fitted heads with ``get_state()`` (e.g. ``{"staging": StagingHead}``).
    info : dict
        JSON-able description (task, mode, classes, embedding, encoder checkpoint id, split…).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, metas = {}, {}
    for name, head in components.items():
        t, meta = head.get_state()
        tensors.update({f"{name}.{k}": v.contiguous() for k, v in t.items()})
        metas[name] = meta
    with atomic_path(directory / HEAD_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": HEAD_FORMAT})
    record = {"format": HEAD_FORMAT, "format_version": 1, **info, "components": metas}
    write_text_atomic(directory / HEAD_META, json.dumps(record, indent=2, default=_json_default))
    return directory


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def load_head(directory) -> tuple[dict, dict]:
    """Heads saved by :func:`save_head`: ``({component: head}, info)``.

    For ``mode="finetune"`` the component ``"window"`` is a :class:`WindowStagingNet` with the
    fine-tuned encoder loaded from ``directory/encoder``.
    """
    directory = Path(directory)
    meta_path, weights_path = directory / HEAD_META, directory / HEAD_WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise StoreError(f"{directory}: no trained head ({HEAD_META} + {HEAD_WEIGHTS}); run "
                         "`sleepfm finetune` first.")
    info = json.loads(meta_path.read_text())
    if info.get("format") != HEAD_FORMAT:
        raise StoreError(f"{meta_path}: not a sleepfm head (format {info.get('format')!r}).")
    tensors = load_file(str(weights_path))
    heads = {}
    for name, meta in info["components"].items():
        part = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        if meta.get("head") == WindowStagingNet.head_name:
            heads[name] = WindowStagingNet.from_state(part, meta, directory / "encoder")
        else:
            heads[name] = head_from_state(part, meta)
    return heads, info


# --------------------------------------------------------------------------------------------
# end-to-end fine-tuning (mode "finetune")
# --------------------------------------------------------------------------------------------
class WindowStagingNet(nn.Module):
    """Encoder + epoch pooling + LSTM over the 30 s epochs of a window → stage logits.

    Parameters
    ----------
    encoder : SleepFMEncoder
    n_classes : int, default=5
    hidden : int, default=64
    bidirectional : bool, default=False
    dropout : float, default=0.1

    Notes
    -----
    Input as the encoder's (``x``, ``mask`` dicts of ``[B, C, T]`` windows); output
    ``[B, n_epochs, n_classes]`` logits, one per 30 s epoch of the window.
    """

    head_name = "window_staging"

    def __init__(self, encoder, n_classes: int = 5, *, hidden: int = 64, bidirectional: bool = False,
                 dropout: float = 0.1):
        super().__init__()
        from ..models.heads import LSTMStagingNet

        self.encoder = encoder
        self.n_classes = n_classes
        self.params = {"n_classes": n_classes, "hidden": hidden, "bidirectional": bidirectional,
                       "dropout": dropout}
        self.norm = nn.LayerNorm(encoder.embed_dim)
        self.lstm = LSTMStagingNet(encoder.embed_dim, n_classes, hidden=hidden,
                                   bidirectional=bidirectional, dropout=dropout)

    def forward(self, x, mask=None) -> torch.Tensor:
        from ..models.sleepfm import pool_epochs

        fused = self.encoder(x, mask).fused
        return self.lstm(self.norm(pool_epochs(fused, self.encoder.config.tokens_per_epoch)))

    def get_state(self) -> tuple[dict, dict]:
        """Head weights (the encoder is saved apart with ``save_checkpoint``)."""
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()
                   if not k.startswith("encoder.")}
        return tensors, {"head": self.head_name, "version": 1, "params": self.params}

    @classmethod
    def from_state(cls, tensors, meta, encoder_dir) -> "WindowStagingNet":
        from ..checkpoint import load_checkpoint

        encoder, _ = load_checkpoint(encoder_dir)
        net = cls(encoder, **meta["params"])
        missing = net.load_state_dict(tensors, strict=False)
        bad = [k for k in missing.missing_keys if not k.startswith("encoder.")]
        if bad or missing.unexpected_keys:
            raise StoreError(f"{encoder_dir.parent}: head weights do not match ({bad[:3]}, "
                             f"{missing.unexpected_keys[:3]}); fine-tune again.")
        return net.eval()


class _LabelledWindows(torch.utils.data.Dataset):
    """Whole 5-minute windows of records with their 10 epoch labels (windows all -1 left out)."""

    def __init__(self, readers, labels, window_s: float, modalities):
        self.readers, self.labels, self.window_s, self.modalities = readers, labels, window_s, modalities
        per = int(round(window_s / EPOCH_S))
        self.index = []
        for i, (r, y) in enumerate(zip(readers, labels)):
            for k in range(int(r.duration_s // window_s)):
                if np.any(y[k * per:(k + 1) * per] >= 0):
                    self.index.append((i, k))
        self.per = per

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        ri, k = self.index[i]
        r = self.readers[ri]
        x = r.read(k * self.window_s, (k + 1) * self.window_s,
                   modalities=[m for m in self.modalities if m in r.channels])
        y = self.labels[ri][k * self.per:(k + 1) * self.per]
        return {"x": x, "record_id": r.record_id, "start_s": k * self.window_s,
                "y": torch.as_tensor(np.asarray(y, dtype=np.int64))}


def _collate_labelled(samples):
    from ..data import collate_windows

    batch = collate_windows(samples)
    batch["y"] = torch.stack([s["y"] for s in samples])
    return batch


def _lightning_module():
    import lightning as L

    class StagingFinetuneModule(L.LightningModule):
        """Cross-entropy on every labelled epoch of each window; AdamW, smaller lr for the encoder.

        Logs ``train/loss`` and ``val/macro_f1``.
        """

        def __init__(self, net: WindowStagingNet, *, lr: float = 1e-4, head_lr: float = 1e-3,
                     class_weight=None):
            super().__init__()
            self.net = net
            self.lr, self.head_lr = lr, head_lr
            self.register_buffer("class_weight", None if class_weight is None
                                 else torch.as_tensor(class_weight, dtype=torch.float32))
            self._val = []

        def training_step(self, batch, _):
            logits = self.net(batch["x"], batch["mask"])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               batch["y"].reshape(-1), weight=self.class_weight,
                                               ignore_index=-1)
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
            return loss

        def validation_step(self, batch, _):
            pred = self.net(batch["x"], batch["mask"]).argmax(-1)
            self._val.append((batch["y"].reshape(-1).cpu(), pred.reshape(-1).cpu()))

        def on_validation_epoch_end(self):
            from ..eval.metrics import macro_f1

            if self._val:
                t = torch.cat([a for a, _ in self._val]).numpy()
                p = torch.cat([b for _, b in self._val]).numpy()
                self.log("val/macro_f1", macro_f1(t, p, n_classes=self.net.n_classes))
            self._val = []

        def configure_optimizers(self):
            enc = [p for n, p in self.net.named_parameters() if n.startswith("encoder.")]
            head = [p for n, p in self.net.named_parameters() if not n.startswith("encoder.")]
            return torch.optim.AdamW([{"params": enc, "lr": self.lr},
                                      {"params": head, "lr": self.head_lr}], weight_decay=1e-4)

    return StagingFinetuneModule


def _finetune_encoder(run_dir: Path, data: TaskData, train: list[int], val: list[int],
                      config: FinetuneConfig, n_classes: int, out_dir: Path):
    """Fine-tune the run's encoder end to end; returns (net, history)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..io.store import Store

    encoder, _ = load_checkpoint(run_dir / "checkpoints" / "encoder")
    encoder.train()
    cfg = encoder.config
    window_s = cfg.context_tokens * cfg.token_seconds
    store = Store(run_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    net = WindowStagingNet(encoder, n_classes, hidden=config.hidden or 64,
                           bidirectional=config.bidirectional)

    def windows(idx):
        return _LabelledWindows([store.open(data.record_ids[i]) for i in idx],
                                [data.y[i] for i in idx], window_s, cfg.modalities)

    train_set, val_set = windows(train), windows(val)
    if len(train_set) == 0:
        raise LabelError(f"no training record is at least {window_s:g} s long with labels; "
                         "full fine-tuning needs whole 5-minute windows.")
    scored = np.concatenate([data.y[i] for i in train]) >= 0
    counts = np.bincount(np.concatenate([data.y[i] for i in train])[scored], minlength=n_classes)
    weight = np.where(counts > 0, counts.sum() / (max((counts > 0).sum(), 1) * np.maximum(counts, 1)),
                      0.0)
    module = _lightning_module()(net, lr=config.lr or 1e-4, class_weight=weight)
    loader = lambda ds, shuffle: torch.utils.data.DataLoader(  # noqa: E731
        ds, batch_size=config.batch_size, shuffle=shuffle, collate_fn=_collate_labelled,
        generator=torch.Generator().manual_seed(config.seed) if shuffle else None)
    trainer = L.Trainer(max_epochs=config.epochs or 3, accelerator="cpu" if config.device == "cpu"
                        else "auto", devices=1, logger=CSVLogger(out_dir / "logs", name="", version=""),
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader(train_set, True),
                val_dataloaders=loader(val_set, False) if len(val_set) else None)
    net.eval()
    save_checkpoint(net.encoder, out_dir / "encoder", metadata={"finetuned_from": str(
        run_dir / "checkpoints" / "encoder"), "task": "staging"})
    history = []
    metrics_csv = out_dir / "logs" / "metrics.csv"
    if metrics_csv.is_file():
        import pandas as pd

        m = pd.read_csv(metrics_csv)
        for epoch, g in m.groupby("epoch"):
            rec = {"epoch": int(epoch)}
            if "train/loss" in g:
                rec["loss"] = float(g["train/loss"].dropna().mean())
            if "val/macro_f1" in g and g["val/macro_f1"].notna().any():
                rec["val_score"] = float(g["val/macro_f1"].dropna().iloc[-1])
            history.append(rec)
    return net, history


@torch.no_grad()
def predict_store(net: WindowStagingNet, run_dir, record_ids, *, batch_size: int = 8) -> list[np.ndarray]:
    """Stage probabilities ``[n_epochs, C]`` per record with a fine-tuned encoder, from the store.

    Windows cover each record as in the embedding job (the last one end-aligned); records shorter
    than a window are one window of their whole-epoch length.
    """
    from ..data import collate_windows
    from ..io.store import Store
    from .embed import plan_windows

    cfg = net.encoder.config
    window_s = cfg.context_tokens * cfg.token_seconds
    per_epoch = cfg.tokens_per_epoch
    store = Store(run_dir)
    net.eval()
    out = []
    for rid in record_ids:
        r = store.open(rid)
        n_epochs = int(r.duration_s // EPOCH_S)
        proba = np.zeros((n_epochs, net.n_classes), dtype=np.float32)
        length = min(window_s, n_epochs * EPOCH_S)
        plan = plan_windows(n_epochs * EPOCH_S, window_s, cfg.token_seconds)
        mods = [m for m in cfg.modalities if m in r.channels]
        for i in range(0, len(plan), batch_size):
            part = plan[i:i + batch_size]
            batch = collate_windows([{"x": r.read(s, s + length, modalities=mods), "record_id": rid,
                                      "start_s": s} for s, _ in part])
            p = torch.softmax(net(batch["x"], batch["mask"]), -1).numpy()
            for b, (s, keep) in enumerate(part):
                first = int(round(s / EPOCH_S))
                skip = keep // per_epoch
                proba[first + skip:first + p.shape[1]] = p[b, skip:]
        out.append(proba)
    return out


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneResult:
    """What ``finetune_run`` trained: the heads, where they are saved, the split and the data."""

    task: str
    mode: str
    directory: Path
    heads: dict
    split: dict
    train_records: list[str]
    val_score: float | None
    info: dict

    def __repr__(self) -> str:
        score = "" if self.val_score is None else f", val score {self.val_score:.3f}"
        return (f"<FinetuneResult {self.task}/{self.mode} | {len(self.train_records)} training "
                f"nights, {len(self.split['test'])} test nights{score} → {self.directory}>")


def _staging_head(config: FinetuneConfig, n_classes: int):
    opts = {"n_classes": n_classes, "seed": config.seed, "device": config.device}
    if config.epochs:
        opts["epochs"] = config.epochs
    if config.lr:
        opts["lr"] = config.lr
    if config.mode == "linear":
        return LinearProbe(**opts)
    if config.hidden:
        opts["hidden"] = config.hidden
    return StagingHead(bidirectional=config.bidirectional, **opts)


def finetune_run(run_dir, task: str = "staging", config: FinetuneConfig | None = None, *,
                 split=None, verbose=None) -> FinetuneResult:
    """Train a staging or events head on a run's embeddings; save it to ``RUN_DIR/heads/<task>``.

    Parameters
    ----------
    run_dir : path-like
        Run directory after ``sleepfm embed``.
    task : {"staging", "events"}, default="staging"
    config : FinetuneConfig, optional
    split : dict or path-like, optional
        A split to reuse (e.g. another run's ``split.json``); by default a new subject-level
        split is made from ``config.seed``, ``test_size`` and ``val_size``.
    verbose : bool, str or int, optional
        Logging level for this call.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    LabelError
        Missing or mismatched label files (see :func:`load_task_data`), too few subjects.
    StoreError
        No embeddings or no encoder checkpoint (``finetune`` mode).

    Examples
    --------
    >>> result = finetune_run("runs/demo", "staging", FinetuneConfig(mode="lstm"))
    >>> result.directory
    PosixPath('runs/demo/heads/staging')
    """
    from ..utils import verbose_scope

    config = config or FinetuneConfig()
    config.validate(task)
    run_dir = Path(run_dir)
    with verbose_scope(verbose):
        data = load_task_data(run_dir, task, embedding=config.embedding, scheme=config.scheme,
                              skip_unlabelled=config.skip_unlabelled,
                              with_embeddings=config.mode != "finetune" or
                              (run_dir / "embeddings").is_dir())
        if split is None:
            split = make_split(data.record_ids, data.subjects, test_size=config.test_size,
                               val_size=config.val_size, seed=config.seed)
        elif not isinstance(split, dict):
            split = read_split(split)
        split = {**split, "subjects": {r: s for r, s in zip(data.record_ids, data.subjects)
                                       if r in set(split["train"] + split["val"] + split["test"])}}
        check_split(split)
        train = _indices(data, split["train"])
        val = _indices(data, split["val"])
        subjects = np.asarray(data.subjects)
        y_train = [data.y[i] for i in train]
        if config.mode == "fewshot" and config.shot_unit == "nights":
            train = list(few_shot(train, subjects, config.shots, seed=config.seed))
            y_train = [data.y[i] for i in train]
        elif config.mode == "fewshot":
            y_train = few_shot_epochs([data.y[i] for i in train], config.shots, seed=config.seed)
        elif config.label_fraction < 1.0:
            train = list(label_fraction(train, subjects, config.label_fraction, seed=config.seed))
            y_train = [data.y[i] for i in train]
        out_dir = run_dir / "heads" / task
        out_dir.mkdir(parents=True, exist_ok=True)
        n_classes = len(STAGE_SCHEMES[config.scheme])
        X_train = [data.X[i] for i in train] if data.X else []
        X_val = [data.X[i] for i in val] if (val and data.X) else None
        y_val = [data.y[i] for i in val] if X_val is not None else None
        if task == "staging" and config.mode == "finetune":
            net, history = _finetune_encoder(run_dir, data, train, val, config, n_classes, out_dir)
            components = {"window": net}
            val_score = history[-1].get("val_score") if history else None
        elif task == "staging":
            head = _staging_head(config, n_classes).fit(X_train, y_train, X_val=X_val, y_val=y_val)
            components = {"staging": head}
            history = head.history_
            val_score = head.score(X_val, y_val) if X_val is not None else None
        else:
            components, history, val_score = _fit_events(data, train, val, config)
        write_text_atomic(out_dir / SPLIT_NAME, json.dumps(split, indent=2))
        checkpoint = run_dir / "checkpoints" / "encoder"
        info = {
            "task": task, "mode": config.mode, "scheme": config.scheme,
            "classes": list(STAGE_SCHEMES[config.scheme]) if task == "staging" else list(EVENT_NAMES),
            "embedding": config.embedding,
            "encoder_checkpoint": {"path": str(checkpoint), "id": data.checkpoint_id},
            "config": asdict(config),
            "split": {"file": SPLIT_NAME, "seed": split.get("seed"),
                      **{p: len(split[p]) for p in ("train", "val", "test")}},
            "train_records": [data.record_ids[i] for i in train],
            "n_train_subjects": len(set(subjects[train])),
            "skipped": data.skipped,
            "training_curve": history,
            "val_score": val_score,
        }
        save_head(out_dir, components, info)
        update_run_json(run_dir, f"finetune_{task}", {
            "head": str(out_dir), "mode": config.mode, "config": asdict(config),
            "train_records": info["train_records"], "test_records": split["test"],
            "val_score": val_score, "skipped": data.skipped})
        logger.info("%s head (%s) saved to %s", task, config.mode, out_dir)
        return FinetuneResult(task, config.mode, out_dir, components, split, info["train_records"],
                              val_score, info)


def _fit_events(data: TaskData, train: list[int], val: list[int], config: FinetuneConfig):
    """Event head, sleep/wake probe and AHI calibration on the training (+ validation) nights."""
    opts = {"seed": config.seed, "device": config.device, "events": EVENT_NAMES,
            "arch": "mlp" if config.mode == "linear" else "lstm",
            "bidirectional": config.bidirectional}
    for key in ("epochs", "hidden", "lr"):
        if getattr(config, key):
            opts[key] = getattr(config, key)
    X_train = [data.X[i] for i in train]
    y_train = [data.y[i] for i in train]
    if config.mode == "fewshot" and config.shot_unit == "epochs":
        raise ValueError("few-shot by epochs per class applies to staging; use --shot-unit nights "
                         "for events.")
    X_val = [data.X[i] for i in val] or None
    y_val = [data.y[i] for i in val] or None
    head = EventHead(**opts).fit(X_train, y_train, X_val=X_val, y_val=y_val)
    sleep_y = [np.where(data.stages[i] >= 0, (data.stages[i] >= 1).astype(np.int64), -1)
               for i in train]
    sleep = LinearProbe(n_classes=2, seed=config.seed).fit(X_train, sleep_y)
    fit_idx = train + val
    X_fit = [data.X[i] for i in fit_idx]
    asleep = [np.where(p.argmax(1) == 1, 2, 0) for p in sleep.predict_proba(X_fit)]
    ahi_fit = data.ahi[fit_idx]
    ok = np.isfinite(ahi_fit)
    reg = AHIRegressor()
    proba = head.predict_proba(X_fit)
    try:
        reg.fit([p for p, k in zip(proba, ok) if k], ahi_fit[ok],
                stages=[s for s, k in zip(asleep, ok) if k])
    except ValueError:
        # Too few nights to calibrate: the raw expected event rate (slope 1, intercept 0).
        logger.warning("AHI calibration needs >= 2 nights with differing event rates; using the "
                       "raw event rate")
        reg.coef_, reg.n_nights_ = np.array([1.0, 0.0]), int(ok.sum())
    val_score = head.score(X_val, y_val) if X_val is not None else None
    return {"events": head, "sleep": sleep, "ahi": reg}, head.history_, val_score


def predict_proba_records(run_dir, heads: dict, info: dict, record_ids, X=None) -> dict:
    """Per-record outputs of saved heads.

    Returns ``{"proba": [...]}`` for staging (``[n_epochs, C]`` each); for events also
    ``"sleep"`` (predicted asleep per epoch) and ``"ahi"`` (estimated AHI per night).
    """
    if info["task"] == "staging":
        if info["mode"] == "finetune":
            return {"proba": predict_store(heads["window"], run_dir, record_ids)}
        return {"proba": heads["staging"].predict_proba(list(X))}
    proba = heads["events"].predict_proba(list(X))
    asleep = [p.argmax(1) == 1 for p in heads["sleep"].predict_proba(list(X))]
    stages = [np.where(a, 2, 0) for a in asleep]
    return {"proba": proba, "sleep": asleep, "ahi": heads["ahi"].predict(proba, stages=stages)}


__all__ = [
    "EVENT_NAMES", "FinetuneConfig", "FinetuneResult", "MODES", "TASKS", "TaskData",
    "WindowStagingNet", "check_split", "finetune_run", "load_head", "load_task_data", "make_split",
    "predict_proba_records", "predict_store", "read_split", "save_head", "true_ahi",
]
