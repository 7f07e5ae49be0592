"""``sleepfm bench``: pre-training objectives compared on the same records, tasks and budget.

For a run directory with scored nights (``preprocess`` done), each objective pre-trains the same
ViT-1D backbone for the same number of steps on the same records (the training and validation
subjects: no test night is ever seen), then every backbone is evaluated on the held-out subjects
(and on a new site's nights with ``--test-site``):

``linear``    OSF's linear probe on the frozen epoch embedding (AdamW, warm-up + cosine, the
              epoch with the best validation AUROC kept), for each label fraction;
``finetune``  the backbone and a linear layer trained end to end (best validation AUROC kept);
``fewshot``   the linear probe on ``k`` labelled epochs per class and on ``k`` labelled nights;

each under the lead conditions at inference (all leads, no EEG, no ECG, no respiration, EEG+EOG
only). A data-scaling study pre-trains one objective on 0, 25, 50 and 100 % of the pre-training
records. Baselines share the table: YASA's shipped model, YASA's features + LightGBM retrained on
the training subjects, and the backbone trained supervised from scratch.

Everything is kept in ``RUN_DIR/bench/`` cell by cell (an encoder, the embeddings of an encoder
under a condition, the rows of a fitted probe or fine-tuned network), each under the fingerprint
of its inputs and settings: a rerun redoes exactly the cells that changed or never finished, and
a pre-training killed midway resumes from its last checkpoint. The report is
``RUN_DIR/reports/bench/``: ``results.csv`` (every row), ``results.md``, ``missing_leads.png``
and ``metrics.json``.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..artifacts import load_encoder, save_encoder
from ..channels import LEAD_CONDITIONS
from ..checkpoint import artifact_id, read_record
from ..config import BenchConfig, PretrainConfig, load_config
from ..eval.bench_report import KEYS, METRICS, best_threshold, bench_markdown, plot_missing_leads
from ..exceptions import InvalidParameterError
from ..lead_data import ArrayEpochs, lead_epoch_loader
from ..lead_epochs import kept_leads
from ..models import ViT1D, create_encoder
from ..models.heads import LinearProbe, balanced_class_weights
from ..rundir import RunDir
from ..splits import label_fraction
from ..ssl.base import OBJECTIVES
from ..train.epoch_finetune import EpochClassifier, EpochFinetuneModule, KeepBest
from ..utils import fingerprint, progress_bar, write_json_atomic
from .bench_data import (BENCH_TASKS, BenchData, Cell, cached_rows, epoch_embeddings, expand_tasks,
                         lead_arrays, load_bench_data, score_row, test_parts, training_labels)
from .bench_yasa import yasa_rows
from .pretrain import PretrainPaths, train_encoder
from .resume import read_metrics

logger = logging.getLogger(__name__)

#: Optimiser recipe of every objective (OSF's: AdamW betas (0.9, 0.95), 10 % warm-up, cosine,
#: clipping 3); DINO adds OSF's weight decay of 0.2.
RECIPE = {"betas": (0.9, 0.95), "warmup_fraction": 0.1, "grad_clip": 3.0, "weight_decay": 0.05}
RECIPES = {"dino": {"weight_decay": 0.2}}
#: OSF's linear-probing recipe: AdamW, warm-up + cosine, the epoch with the best validation AUROC
#: kept (no early stop), balanced class weights.
PROBE_RECIPE = {"lr": 1e-2, "batch_size": 256, "schedule": "cosine", "select_by": "auroc"}
#: Settings a probe cell's rows depend on (with the encoder, the labels and the split).
PROBE_FIELDS = ("probe_epochs", "conditions", "n_boot", "seed", "device")
#: Settings a fine-tuning cell's rows depend on.
FINETUNE_FIELDS = ("finetune_steps", "finetune_lr", "batch_size", "conditions", "n_boot", "seed",
                   "device")


class BenchResult:
    """What :func:`bench` returns: the rows and where the report is.

    Attributes
    ----------
    table : DataFrame
        One row per method × setting × task × labels × pre-training fraction × condition ×
        split (:data:`~sleepfm.eval.bench_report.KEYS`), with the metrics and their intervals.
    report_dir : Path
    notes : list of str
    """

    def __init__(self, table: pd.DataFrame, report_dir: Path, notes: list[str]):
        self.table, self.report_dir, self.notes = table, report_dir, notes

    def __repr__(self) -> str:
        return (f"<BenchResult | {len(self.table)} rows, {self.table['method'].nunique()} "
                f"methods → {self.report_dir}>")


# --------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------
def _pretrain_records(data: BenchData, fraction: float, seed: int) -> list[str]:
    """The pre-training records of ``fraction`` of the pre-training subjects (nested)."""
    ids = data.split["pretrain"]
    if fraction >= 1.0:
        return list(ids)
    subject = dict(zip(data.record_ids, data.subjects))
    kept = label_fraction(np.arange(len(ids)), [subject[r] for r in ids], fraction, seed=seed)
    return [ids[i] for i in kept]


def _encoder_cell(run: RunDir, data: BenchData, cfg: BenchConfig, objective: str,
                  fraction: float, arrays: dict, progress: bool) -> Path:
    """Pre-train (or, at fraction 0, initialise) one backbone; returns its artefact directory."""
    name = "random_init" if fraction == 0 else (
        objective if fraction == 1 else f"{objective}@{fraction:g}")
    base = run.bench_dir / "encoders" / name
    records = [] if fraction == 0 else _pretrain_records(data, fraction, cfg.seed)
    pconfig = load_config(PretrainConfig, {
        **RECIPE, **RECIPES.get(objective, {}), "encoder": cfg.encoder,
        "encoder_overrides": cfg.encoder_overrides, "objective": objective,
        "max_steps": cfg.steps, "max_epochs": 1_000_000, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "patience": 0, "val_fraction": 0.1, "seed": cfg.seed,
        "num_workers": cfg.num_workers, "accelerator": "gpu" if cfg.device.startswith("cuda")
        else "cpu", "devices": 1})
    store = run.store()
    key = fingerprint(pconfig.to_dict() if fraction else cfg.encoder_overrides, cfg.encoder,
                      records, [store.open(r).fingerprint for r in records], fraction)
    marker = base / "cell.json"
    saved = json.loads(marker.read_text()) if marker.is_file() else {}
    if saved.get("key") == key and saved.get("done") and (base / "encoder").is_dir():
        return base / "encoder"
    if base.exists() and saved.get("key") != key:
        shutil.rmtree(base)  # made under other settings: never reused (an unfinished one resumes)
    base.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, {"key": key, "done": False})
    start = time.perf_counter()
    if fraction == 0:
        torch.manual_seed(cfg.seed)
        model = create_encoder(cfg.encoder, **cfg.encoder_overrides)
        save_encoder(model, base / "encoder", metadata={"note": "untrained (random weights)",
                                                        "seed": cfg.seed})
        summary = {"steps": 0}
    else:
        logger.info("pre-training %s on %d records (%d steps)", name, len(records), cfg.steps)
        paths = PretrainPaths(base / "encoder", base / "lightning", base / "settings.json",
                              base / "logs")
        summary = train_encoder(store, pconfig, paths, subjects=run.subjects(records),
                                record_ids=records, channel_map=run.channel_map(),
                                progress=progress, arrays=arrays,
                                metadata={"run_dir": str(run.path), "bench": name})
    write_json_atomic(marker, {"key": key, "done": True, "records": records, "summary": summary,
                               "seconds": round(time.perf_counter() - start, 1)})
    return base / "encoder"


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
def _label_specs(cfg: BenchConfig, setting: str) -> list[str]:
    if setting == "linear":
        return [f"{f:.0%}" for f in cfg.label_fractions]
    return [f"{k}/class" for k in cfg.shots] + \
        [f"{k} night" + ("s" if k > 1 else "") for k in cfg.shot_nights]


def _probe_rows(data, cfg, method, fraction, task, spec, embeddings) -> list:
    """Fit the linear probe on the training embeddings (all leads) and score every condition
    and split."""
    train, y_train = training_labels(data, task, spec, cfg.seed)
    few = not spec.endswith("%")
    emb = embeddings["all"]
    X = [emb[data.record_ids[i]] for i in train]
    val = data.index("val")
    fit_val = {} if few or not val else {
        "X_val": [emb[data.record_ids[i]] for i in val],
        "y_val": [data.labels[task][i] for i in val]}
    probe = LinearProbe(n_classes=BENCH_TASKS[task], epochs=cfg.probe_epochs,
                        patience=cfg.probe_epochs, seed=cfg.seed, device=cfg.device,
                        **PROBE_RECIPE)
    if not any(np.any(t >= 0) for t in y_train):
        return []
    probe.fit(X, y_train, **fit_val)
    threshold = None
    if BENCH_TASKS[task] == 2:
        threshold = 0.5 if not fit_val else best_threshold(
            np.concatenate(fit_val["y_val"]),
            np.concatenate(probe.predict_proba(fit_val["X_val"]))[:, 1])
    setting = "linear" if not few else "fewshot"
    rows = []
    for split, records in test_parts(data):
        for condition in cfg.conditions:
            proba = dict(zip(records, probe.predict_proba([embeddings[condition][r]
                                                           for r in records])))
            rows.append(score_row(method, setting, task, spec, fraction, condition, split,
                                  data, records, proba, threshold, cfg))
    return rows


def _finetune_rows(data, cfg, method, encoder_dir, task, arrays, progress) -> list:
    """Fine-tune the backbone and a linear layer end to end; score every condition and split."""
    encoder, _ = load_encoder(encoder_dir)
    encoder.train()
    n_classes = BENCH_TASKS[task]

    def dataset(idx, labelled_only: bool) -> ArrayEpochs:
        ids = [data.record_ids[i] for i in idx]
        labels = [data.labels[task][i] for i in idx]
        return ArrayEpochs(ids, [arrays[r][0] for r in ids], [arrays[r][1] for r in ids],
                           epochs=[np.flatnonzero(y >= 0) for y in labels] if labelled_only
                           else None, labels=labels)

    train_idx, val_idx = data.index("train"), data.index("val")
    y_train = np.concatenate([data.labels[task][i] for i in train_idx])
    if not np.any(y_train >= 0):
        return []
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net = EpochClassifier(encoder, n_classes)
    module = EpochFinetuneModule(net, lr=cfg.finetune_lr, head_lr=10 * cfg.finetune_lr,
                                 class_weight=balanced_class_weights(
                                     np.bincount(y_train[y_train >= 0], minlength=n_classes)))
    keep = KeepBest()
    loaders = {"train_dataloaders": lead_epoch_loader(
        dataset(train_idx, True), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
        num_workers=cfg.num_workers, drop_last=True)}
    if val_idx:
        loaders["val_dataloaders"] = lead_epoch_loader(dataset(val_idx, True),
                                                       batch_size=cfg.batch_size,
                                                       num_workers=cfg.num_workers)
    trainer = L.Trainer(max_steps=cfg.finetune_steps, max_epochs=-1, logger=False,
                        callbacks=[keep], enable_checkpointing=False,
                        enable_progress_bar=progress, enable_model_summary=False,
                        accelerator="gpu" if cfg.device.startswith("cuda") else "cpu", devices=1,
                        val_check_interval=max(1, cfg.finetune_steps // 4),
                        check_val_every_n_epoch=None, num_sanity_val_steps=0,
                        limit_val_batches=1.0 if val_idx else 0)
    trainer.fit(module, **loaders)
    if keep.state is not None:
        net.load_state_dict(keep.state)
    net.eval().to(cfg.device)
    fraction = float("nan") if method == "scratch" else 1.0
    threshold = None
    if n_classes == 2 and val_idx:
        val = [data.record_ids[i] for i in val_idx]
        proba = _predict(net, {r: arrays[r] for r in val}, ["all"], cfg)["all"]
        threshold = best_threshold(np.concatenate([data.labels[task][i] for i in val_idx]),
                                   np.concatenate([proba[r] for r in val])[:, 1])
    rows = []
    for split, records in test_parts(data):
        proba = _predict(net, {r: arrays[r] for r in records}, cfg.conditions, cfg)
        rows += [score_row(method, "finetune", task, "100%", fraction, condition, split, data,
                           records, proba[condition], threshold, cfg)
                 for condition in cfg.conditions]
    return rows


@torch.inference_mode()
def _predict(net, arrays: dict, conditions, cfg) -> dict[str, dict[str, np.ndarray]]:
    """``{condition: {record_id: [n_epochs, C]}}`` class probabilities of every epoch, each
    chunk of epochs read once for all conditions."""
    keep = {c: torch.from_numpy(kept_leads(LEAD_CONDITIONS[c])).to(cfg.device)
            for c in conditions}
    out: dict[str, dict[str, np.ndarray]] = {c: {} for c in conditions}
    for rid, (arr, present, _) in arrays.items():
        mask = torch.from_numpy(present).to(cfg.device)
        parts = {c: [] for c in conditions}
        for first in range(0, len(arr), cfg.batch_size):
            x = torch.from_numpy(np.asarray(arr[first:first + cfg.batch_size],
                                            dtype=np.float32)).to(cfg.device)
            for c in conditions:
                logits = net(x, (mask & keep[c]).expand(len(x), -1))
                parts[c].append(logits.float().softmax(-1).cpu().numpy())
        for c in conditions:
            out[c][rid] = np.concatenate(parts[c])
    return out


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def _check(cfg: BenchConfig, tasks):
    """Refuse what cannot be benchmarked; returns the backbone's config."""
    for objective in cfg.objectives:
        if "ViT1D" not in OBJECTIVES[objective].architectures:
            raise InvalidParameterError(f"objective {objective!r} does not train a ViT-1D; "
                                        "choose among "
                                        f"{[n for n in OBJECTIVES if 'ViT1D' in OBJECTIVES[n].architectures]}.")
    if cfg.scaling and "ViT1D" not in OBJECTIVES[cfg.scaling_objective].architectures:
        raise InvalidParameterError(f"scaling_objective {cfg.scaling_objective!r} does not train "
                                    "a ViT-1D.")
    with torch.device("meta"):
        model = create_encoder(cfg.encoder, **cfg.encoder_overrides)
    if not isinstance(model, ViT1D):
        raise InvalidParameterError(f"the benchmark's backbone is a ViT-1D (osf_nano, osf_tiny, "
                                    f"...), not {cfg.encoder!r}.")
    if not tasks:
        raise InvalidParameterError("no task to evaluate; pass --tasks stage,arousal,...")
    return model.config


def bench(run_dir, config: BenchConfig | str | None = None, *, progress: bool = False,
          **overrides) -> BenchResult:
    """Compare pre-training objectives on a run's scored nights; see the module docstring.

    Parameters
    ----------
    run_dir : path-like or RunDir
        A run directory after ``sleepfm preprocess`` whose records have stage (and event) labels.
    config : BenchConfig, dict or YAML path, optional
        Settings; ``**overrides`` replace single fields (e.g. ``steps=50``).
    progress : bool, default=False
        Show progress bars.

    Returns
    -------
    BenchResult

    Raises
    ------
    InvalidParameterError
        An objective that does not train a ViT-1D, a backbone that is not one, or no task.
    LabelError
        No labelled record, or too few subjects to split.

    Examples
    --------
    >>> result = bench("runs/demo", objectives=["dino", "mae"], steps=20, settings=["linear"])
    >>> result.table.query("condition == 'all' and split == 'held_out'")
    """
    cfg = load_config(BenchConfig, config, **overrides)
    tasks = expand_tasks(cfg.tasks)
    backbone = _check(cfg, tasks)
    run = RunDir(run_dir)
    with run.lock("bench"):
        data = load_bench_data(run, tasks, test_size=cfg.test_size, val_size=cfg.val_size,
                               test_site=cfg.test_site, seed=cfg.seed)
        write_json_atomic(run.bench_dir / "split.json", data.split)
        arrays = lead_arrays(run, data.record_ids, run.bench_dir / "epochs",
                             rate=backbone.sampling_rate, samples=backbone.seq_len,
                             progress=progress)
        encoders = {(o, 1.0): _encoder_cell(run, data, cfg, o, 1.0, arrays, progress)
                    for o in cfg.objectives}
        for fraction in cfg.scaling:
            encoders[(cfg.scaling_objective, fraction)] = _encoder_cell(
                run, data, cfg, cfg.scaling_objective, fraction, arrays, progress)
        if "scratch" in cfg.baselines:
            encoders[("scratch", float("nan"))] = _encoder_cell(run, data, cfg, "scratch", 0.0,
                                                                arrays, progress)
        rows: list[dict] = []
        label_key = fingerprint(data.split, {r: data.inputs[r] for r in data.record_ids})
        jobs = _jobs(cfg, tasks, encoders)
        embedded: dict[Path, dict] = {}
        with progress_bar(len(jobs), "bench", "cell", progress) as bar:
            for method, fraction, setting, task, spec in jobs:
                encoder_dir = encoders[(method, fraction)]
                enc_id = artifact_id(read_record(encoder_dir, kind="encoder"))
                fields = FINETUNE_FIELDS if setting == "finetune" else PROBE_FIELDS
                recipe = {} if setting == "finetune" else PROBE_RECIPE
                cell = Cell(_cell_name(method, fraction, setting, task, spec),
                            fingerprint(enc_id, setting, task, spec, label_key, __version__,
                                        recipe, {f: getattr(cfg, f) for f in fields}))
                if setting == "finetune":
                    rows += cached_rows(run, cell, lambda: _finetune_rows(
                        data, cfg, method, encoder_dir, task, arrays, progress))
                else:
                    if encoder_dir not in embedded:
                        embedded[encoder_dir] = epoch_embeddings(
                            encoder_dir, arrays, cfg.conditions,
                            run.bench_dir / "embeddings" / encoder_dir.parent.name,
                            batch_size=cfg.batch_size, device=cfg.device)
                    rows += cached_rows(run, cell, lambda: _probe_rows(
                        data, cfg, method, fraction, task, spec, embedded[encoder_dir]))
                bar.update()
        rows += yasa_rows(run, data, cfg, tasks, label_key)
        table = pd.DataFrame(rows, columns=[*KEYS, "n_nights", "n_epochs", *METRICS,
                                            "auroc_low", "auroc_high", "macro_f1_low",
                                            "macro_f1_high", "note"])
        notes = _notes(data, cfg) + _diagnoses(encoders)
        report = _write_report(run, table, cfg, notes)
        run.record_stage("bench", {"config": cfg.to_dict(), "rows": len(table),
                                   "split": {k: v for k, v in data.split.items()
                                             if k != "subjects"},
                                   "encoders": {f"{m}@{f:g}": str(p)
                                                for (m, f), p in encoders.items()}})
        return BenchResult(table, report, notes)


def _cell_name(method, fraction, setting, task, spec) -> str:
    frac = "" if fraction != fraction or fraction == 1.0 else f"@{fraction:g}"
    spec = spec.replace("/", "per").replace(" ", "").replace("%", "pct")
    return f"{method}{frac}-{setting}-{task}-{spec}"


def _jobs(cfg: BenchConfig, tasks, encoders) -> list[tuple]:
    """``(method, fraction, setting, task, labels)`` of every probe and fine-tuning cell."""
    jobs = []
    for (method, fraction) in encoders:
        for task in tasks:
            if method == "scratch":
                jobs.append((method, fraction, "finetune", task, "100%"))
                continue
            main = fraction == 1.0 and method in cfg.objectives
            for setting in cfg.settings:
                if setting == "finetune" and main:
                    jobs.append((method, fraction, setting, task, "100%"))
                elif setting == "linear":
                    specs = _label_specs(cfg, setting) if main else ["100%"]
                    jobs += [(method, fraction, setting, task, s) for s in specs]
                elif setting == "fewshot" and main:
                    jobs += [(method, fraction, setting, task, s)
                             for s in _label_specs(cfg, setting)]
            if not main and "linear" not in cfg.settings:
                jobs.append((method, fraction, "linear", task, "100%"))
    return jobs


def _diagnoses(encoders: dict) -> list[str]:
    """What each pre-training's last logged terms say went wrong (:meth:`Objective.diagnose`),
    read from its logs, so cells trained earlier are diagnosed too."""
    notes = []
    for (method, fraction), encoder_dir in encoders.items():
        logs = encoder_dir.parent / "logs" / "pretrain"
        if method not in OBJECTIVES or not logs.is_dir():
            continue
        log = read_metrics(logs)
        train = [c for c in log.columns if c.startswith("train/")]
        last = log[train].ffill().iloc[-1] if len(log) and train else {}
        terms = {c.split("/", 1)[1]: float(v) for c, v in dict(last).items() if v == v}
        record = read_record(encoder_dir, kind="encoder")
        options = record["metadata"].get("training", {}).get("config", {}).get(
            "objective_kwargs", {})
        diagnosis = OBJECTIVES.create(method, **options).diagnose(terms)
        if diagnosis:
            notes.append(f"{encoder_dir.parent.name}: {diagnosis}")
    return notes


def _notes(data: BenchData, cfg: BenchConfig) -> list[str]:
    split = data.split
    notes = [f"{len(split['train'])} training, {len(split['val'])} validation and "
             f"{len(split['test'])} test nights (held-out subjects)"
             + (f", {len(split['new_site'])} new-site nights (site {split['test_site']})"
                if split["new_site"] else "") + f"; seed {cfg.seed}",
             f"backbone {cfg.encoder} {cfg.encoder_overrides or ''}; every objective pre-trained "
             f"{cfg.steps} steps of {cfg.batch_size} epochs on the {len(split['pretrain'])} "
             "training and validation nights"]
    return notes + data.notes


def _write_report(run: RunDir, table: pd.DataFrame, cfg: BenchConfig, notes) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with run.writing_report("bench") as tmp:
        table.to_csv(tmp / "results.csv", index=False)
        (tmp / "results.md").write_text(bench_markdown(
            table, title=f"Pre-training benchmark ({run.path.name})", notes=notes))
        ax = plot_missing_leads(table, task=table["task"].iloc[0] if len(table) else "stage5")
        ax.figure.tight_layout()
        ax.figure.savefig(tmp / "missing_leads.png", dpi=120)
        plt.close(ax.figure)
        write_json_atomic(tmp / "metrics.json", {"config": cfg.to_dict(), "notes": notes,
                                                 "rows": json.loads(table.to_json(
                                                     orient="records"))})
    return run.report_dir("bench")
