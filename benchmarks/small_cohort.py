"""Sleep staging in a small cohort: a handful of scored nights from a site the defaults never saw.

A lab with a few scored nights runs ``preprocess → pretrain → embed → finetune staging``. This
script measures what that gives, next to what the lab could run instead, on the very same
held-out nights, and takes the result apart:

1. **Data** (SYNTHETIC): ``--nights`` nights of ``--hours`` h from site ``B`` of
   :mod:`sleepfm.synthetic_sites` (other channel names, rates, amplifier gains, noise, 60 Hz hum,
   an older population); one subject per night. Labels are the generator's true stages
   (``--labels truth``, the default: copied over ``<record_id>.csv`` before preprocessing) or
   the simulated scorer's (``--labels scorer``).
2. **One fixed split** by subject (``--test-nights`` held out, the others for training, no
   validation set), saved as ``split.json`` and used by every method.
3. **Methods**, each scored on the test nights (macro-F1 over the classes present in the truth
   or the prediction, Cohen's kappa, accuracy):

   - the default pipeline with the *package's default settings* (``pretrain(run)``,
     ``embed(run)``, ``finetune(run, "staging")``, ``evaluate``), and with the previous
     defaults of the staging head (``mode="lstm"``, embeddings, the head's 10 passes:
     ``min_steps=1``);
   - YASA's shipped model, and YASA's features + LightGBM retrained on the same training
     nights (:mod:`sleepfm.yasa_baseline`);
   - ablations: a randomly initialised encoder instead of the pre-trained one, a linear probe
     or MLP instead of the LSTM, the head's training budget and learning rate, a longer
     pre-training (``--budget-epochs``), and heads on spectral features
     (:mod:`sleepfm.spectral`) alone or beside the embeddings.

``--rotate`` also runs the headline methods with every night tested once (disjoint groups of
``--test-nights``), pooling the test epochs: two test nights alone make a noisy comparison.

Run directories are kept under ``--out`` and reused (preprocessing, pre-training and embedding
are not redone), so a second run only trains the heads again. Prints a markdown table and writes
it to ``OUT/run/reports/small_cohort.md`` (+ ``.json``).

Example
-------
python benchmarks/small_cohort.py --out runs/small_cohort
python benchmarks/small_cohort.py --out runs/small_cohort --budget-epochs 0 --no-ablations
python benchmarks/small_cohort.py --out runs/small_cohort --rotate   # every night tested once
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from sleepfm import (PretrainConfig, RunDir, create_encoder, embed, evaluate,  # noqa: E402
                     finetune, load_task_data, preprocess_directory, pretrain, save_encoder,
                     staging_report)
from sleepfm.eval.metrics import cohen_kappa, macro_f1  # noqa: E402
from sleepfm.splits import make_split, write_split  # noqa: E402
from sleepfm.synthetic_sites import SCORERS_DIR, write_site_cohort  # noqa: E402
from sleepfm.yasa_baseline import (YasaLightGBM, fit_length, yasa_features,  # noqa: E402
                                   yasa_predict_proba)

logger = logging.getLogger("small_cohort")

#: The staging head's settings before this benchmark: an LSTM on the embeddings, trained for the
#: head's own 10 passes (``min_steps=1`` switches the step budget off).
PREVIOUS = {"mode": "lstm", "features": "embedding", "min_steps": 1}


def write_data(directory: Path, args) -> None:
    """The site's nights, with the chosen labels as ``<record_id>.csv``."""
    if (directory / "cohort.csv").is_file():
        return
    write_site_cohort(directory, args.nights, site=args.site, hours=args.hours, seed=args.seed)
    if args.labels == "truth":
        for truth in sorted((directory / SCORERS_DIR).glob("*.truth.csv")):
            shutil.copy(truth, directory / truth.name.replace(".truth.csv", ".csv"))


def linked_run(run: Path, name: str) -> Path:
    """A run sharing ``run``'s store, labels and cohort (its own encoder and embeddings)."""
    other = run.parent / name
    other.mkdir(parents=True, exist_ok=True)
    for sub in ("hdf5", "labels"):
        if not (other / sub).exists():
            (other / sub).symlink_to((run / sub).resolve(), target_is_directory=True)
    if (run / "cohort.csv").is_file():
        shutil.copy(run / "cohort.csv", other / "cohort.csv")
    return other


def head_row(run: Path, split: Path, n_boot: int, seed: int, **settings) -> dict:
    """Train a staging head with ``settings`` on the split, evaluate it on the test nights."""
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = finetune(run, "staging", split=split, seed=seed, **settings)
        ev = evaluate(run, "staging", n_boot=n_boot, seed=seed, figures=False)
    s = ev.summary.set_index("metric")["value"]
    info = result.info
    chosen = (info.get("selection") or {}).get("chosen")
    head = chosen or f"{result.mode} ({info['features']})"
    nights = {rid: (g["true"].to_numpy(), g["pred"].to_numpy())
              for rid, g in ev.predictions.groupby("record_id")}
    return {"macro_f1": float(s["macro_f1"]), "kappa": float(s["kappa"]),
            "accuracy": float(s["accuracy"]), "seconds": time.perf_counter() - t,
            "head": head, "epochs": len(result.heads["staging"].history_),
            "selection": info.get("selection"), "nights": nights}


def yasa_rows(run: Path, data_dir: Path, split: dict, n_boot: int, seed: int,
              cache: Path) -> dict:
    """YASA's shipped model and YASA features + LightGBM retrained on the training nights."""
    ids = split["train"] + split["test"]
    labels = load_task_data(run, "staging", record_ids=ids, with_embeddings=False)
    y = dict(zip(labels.record_ids, labels.y))
    subjects = dict(zip(labels.record_ids, labels.subjects))
    cache.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    features = {}
    for rid in ids:
        path = cache / f"{rid}.csv"
        if not path.is_file():
            yasa_features(data_dir / f"{rid}.edf").to_csv(path)
        features[rid] = pd.read_csv(path, index_col=0)
    feature_s = time.perf_counter() - t
    test = split["test"]
    out = {}
    t = time.perf_counter()
    model = YasaLightGBM(n_jobs=1, seed=seed).fit(
        [features[r] for r in split["train"]],
        [fit_length(y[r], len(features[r]), fill=-1) for r in split["train"]])
    proba = model.predict_proba([features[r] for r in test])
    pred = [fit_length(p, len(y[r]), fill=0.2).argmax(1) for p, r in zip(proba, test)]
    out["lgbm"] = (pred, feature_s + time.perf_counter() - t)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = [yasa_predict_proba(data_dir / f"{r}.edf", n_epochs=len(y[r])).argmax(1)
                for r in test]
    out["shipped"] = (pred, time.perf_counter() - t)
    rows = {}
    for name, (pred, seconds) in out.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = staging_report([y[r] for r in test], pred, groups=[subjects[r] for r in test],
                                 n_boot=n_boot, seed=seed)
        s = rep.summary.set_index("metric")["value"]
        rows[name] = {"macro_f1": float(s["macro_f1"]), "kappa": float(s["kappa"]),
                      "accuracy": float(s["accuracy"]), "seconds": seconds,
                      "nights": {r: (y[r], p) for r, p in zip(test, pred)}}
    return rows


def rotation_rows(run: Path, data_dir: Path, out: Path, ids: list[str], subjects: dict,
                  args) -> list[str]:
    """The headline methods on every disjoint group of ``--test-nights`` test nights in turn
    (the same encoder: pre-training reads every night's signals, never its labels); macro-F1
    and kappa over all test epochs pooled, and the mean and range of the per-group values."""
    order = np.random.default_rng(args.seed).permutation(sorted(set(subjects.values())))
    groups = [order[i:i + args.test_nights] for i in range(0, len(order), args.test_nights)]
    methods = {"previous head defaults": PREVIOUS, "new defaults (auto)": {}}
    results: dict[str, list[dict]] = {m: [] for m in [*methods, "YASA + LightGBM retrained",
                                                     "YASA shipped"]}
    for k, group in enumerate(groups):
        test = [r for r in ids if subjects[r] in set(group)]
        split = {"seed": args.seed, "train": [r for r in ids if r not in test], "val": [],
                 "test": test}
        path = out / f"split-rotation{k}.json"
        write_split(path, split)
        for name, settings in methods.items():
            results[name].append(head_row(run, path, args.n_boot, args.seed, **settings))
        yasa = yasa_rows(run, data_dir, split, args.n_boot, args.seed,
                         out / f"yasa-features-{args.labels}")
        results["YASA + LightGBM retrained"].append(yasa["lgbm"])
        results["YASA shipped"].append(yasa["shipped"])
        logger.info("rotation %d (test %s): %s", k, ", ".join(test), {
            m: round(r[-1]["macro_f1"], 3) for m, r in results.items()})
    lines = ["", f"Every night tested once ({len(groups)} rotations of {args.test_nights} test "
             "nights, the others for training):", "",
             "| method | pooled macro-F1 | pooled kappa | mean macro-F1 [min, max] | "
             "mean kappa | chosen (auto) |", "|---|---|---|---|---|---|"]
    for name, rs in results.items():
        true = [t for r in rs for t, _ in r["nights"].values()]
        pred = [p for r in rs for _, p in r["nights"].values()]
        f1s, kappas = [r["macro_f1"] for r in rs], [r["kappa"] for r in rs]
        chosen = ", ".join(r["head"] for r in rs) if name.startswith("new") else ""
        lines.append(f"| {name} | {macro_f1(true, pred):.3f} | {cohen_kappa(true, pred):.3f} | "
                     f"{np.mean(f1s):.3f} [{min(f1s):.3f}, {max(f1s):.3f}] | "
                     f"{np.mean(kappas):.3f} | {chosen} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/small_cohort", help="folder of the data and runs")
    p.add_argument("--nights", type=int, default=8, help="nights (one subject each)")
    p.add_argument("--test-nights", type=int, default=2, help="nights held out for testing")
    p.add_argument("--hours", type=float, default=1.0, help="length of each night (h)")
    p.add_argument("--site", default="B", help="site of sleepfm.synthetic_sites")
    p.add_argument("--labels", choices=("truth", "scorer"), default="truth",
                   help="exact stages, or those of the simulated scorer 0")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, split and training")
    p.add_argument("--pretrain-epochs", type=int, default=None,
                   help="pre-training epochs (default: the package's default settings)")
    p.add_argument("--budget-epochs", type=int, default=20,
                   help="ablation: pre-train this many epochs without early stopping (0: skip)")
    p.add_argument("--no-ablations", action="store_true", help="headline rows only")
    p.add_argument("--rotate", action="store_true",
                   help="also run the headline methods with every night tested once")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (evaluate)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data_dir, run = out / f"source-{args.labels}", out / f"run-{args.labels}"
    times: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t = time.perf_counter()
        logger.info("%s ...", name)
        value = fn(*a, **kw)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        logger.info("%s: %.1f s", name, times[name])
        return value

    timed("synthesise", write_data, data_dir, args)
    timed("preprocess", preprocess_directory, data_dir, run)
    ids = RunDir(run).store().record_ids
    subjects = RunDir(run).subjects(ids)
    split = make_split(ids, [subjects[r] for r in ids],
                       test_size=args.test_nights / len(ids), val_size=0.0, seed=args.seed)
    split_path = out / "split.json"
    write_split(split_path, split)
    pre_cfg = PretrainConfig(seed=args.seed, **({"max_epochs": args.pretrain_epochs}
                                                if args.pretrain_epochs else {}))
    if not RunDir(run).encoder_dir.is_dir():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timed("pretrain", pretrain, run, pre_cfg, progress=False)
    timed("embed", embed, run, progress=False)
    pre = RunDir(run).stage_info("pretrain")
    common = dict(split=split_path, n_boot=args.n_boot, seed=args.seed)

    rows: list[tuple[str, str, dict]] = []  # (group, method, result)

    def add(group, method, fn, *a, **kw):
        result = timed(method, fn, *a, **kw)
        rows.append((group, method, result))
        logger.info("%s: macro-F1 %.3f, kappa %.3f", method, result["macro_f1"], result["kappa"])
        return result

    add("headline", "Default pipeline, previous head defaults (LSTM on embeddings, 10 passes)",
        head_row, run, **common, **PREVIOUS)
    new = add("headline", "Default pipeline, new defaults (`finetune(run, \"staging\")`)",
              head_row, run, **common)
    yasa = timed("yasa", yasa_rows, run, data_dir, split, args.n_boot, args.seed,
                 out / f"yasa-features-{args.labels}")
    rows.append(("headline", "YASA features + LightGBM retrained on the training nights",
                 yasa["lgbm"]))
    rows.append(("headline", "YASA shipped model (not retrained)", yasa["shipped"]))

    if not args.no_ablations:
        rand = linked_run(run, f"{run.name}-random-encoder")
        if not RunDir(rand).encoder_dir.is_dir():
            torch.manual_seed(args.seed)
            save_encoder(create_encoder(pre_cfg.encoder), RunDir(rand).encoder_dir,
                         metadata={"note": "randomly initialised, never trained"})
        timed("embed (random encoder)", embed, rand, progress=False)
        A = "ablation"
        add(A, "Random-init encoder + LSTM (previous head defaults)", head_row, rand, **common,
            **PREVIOUS)
        add(A, "Pre-trained + linear probe (30 passes)", head_row, run, **common,
            mode="linear", features="embedding", min_steps=1)
        add(A, "Random-init encoder + linear probe (30 passes)", head_row, rand, **common,
            mode="linear", features="embedding", min_steps=1)
        add(A, "Pre-trained + LSTM, lr 1e-2 (10 passes)", head_row, run, **common,
            **{**PREVIOUS, "lr": 1e-2})
        add(A, "Pre-trained + LSTM, >= 200 steps", head_row, run, **common, mode="lstm",
            features="embedding")
        add(A, "Pre-trained + linear probe, >= 200 steps", head_row, run, **common,
            mode="linear", features="embedding")
        add(A, "Pre-trained + MLP, >= 200 steps", head_row, run, **common, mode="mlp",
            features="embedding")
        add(A, "Random-init encoder + new defaults (auto)", head_row, rand, **common)
        if args.budget_epochs:
            # No validation night: the default's validation loss rises after epoch 1 and the
            # exporter would keep that encoder again; this keeps the last one.
            longer = linked_run(run, f"{run.name}-pretrain-{args.budget_epochs}-last")
            if not RunDir(longer).encoder_dir.is_dir():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    timed("pretrain (longer)", pretrain, longer,
                          PretrainConfig(seed=args.seed, max_epochs=args.budget_epochs,
                                         patience=0, val_fraction=0.0), progress=False)
            timed("embed (longer)", embed, longer, progress=False)
            what = f"Pre-trained {args.budget_epochs} epochs on all nights (last encoder)"
            add(A, f"{what} + LSTM (previous head defaults)", head_row, longer, **common,
                **PREVIOUS)
            add(A, f"{what} + LSTM, >= 200 steps", head_row, longer, **common, mode="lstm",
                features="embedding")
            add(A, f"{what} + linear probe, >= 200 steps", head_row, longer, **common,
                mode="linear", features="embedding")
        for mode in ("linear", "mlp", "lstm"):
            add(A, f"Spectral features + {mode}, >= 200 steps", head_row, run, **common,
                mode=mode, features="spectral")
        add(A, "Embeddings + spectral features + linear probe, >= 200 steps", head_row, run,
            **common, mode="linear", features="both")

    n_train, n_test = len(split["train"]), len(split["test"])
    pre_line = (f"Pre-training ({pre['config']['encoder']}, {pre['config']['objective']}, "
                f"max {pre['config']['max_epochs']} epochs, patience "
                f"{pre['config']['patience']}): stopped after {pre.get('epochs')} epochs / "
                f"{pre.get('steps')} optimiser steps; exported encoder from epoch "
                f"{(pre.get('exported') or {}).get('epoch')}; validation loss "
                f"{pre.get('initial_val_loss') or float('nan'):.3f} untrained → "
                f"{pre.get('best_val_loss') or float('nan'):.3f} (beat untrained: "
                f"{pre.get('beat_untrained')}).")
    sel = new.get("selection") or {}
    lines = [
        "# Sleep staging in a small cohort",
        "",
        f"**SYNTHETIC data** (`sleepfm.synthetic_sites`, site {args.site}: other channel names, "
        f"rates, gains, noise and hum, an older population): {len(ids)} one-subject nights of "
        f"{args.hours:g} h, labels = {'the true stages' if args.labels == 'truth' else 'scorer 0'}"
        f". These figures say how each method recovers the generator's stages, not how it does on "
        "patients.",
        "",
        f"One split for every method (seed {args.seed}): {n_train} training nights "
        f"({', '.join(split['train'])}), {n_test} test nights ({', '.join(split['test'])}), no "
        "validation nights. Metrics on the test nights' epochs; macro-F1 averages the classes "
        "present in the truth or the prediction. With 2 test subjects no CI is given.",
        pre_line + ("" if not args.pretrain_epochs else
                    f" NOTE: --pretrain-epochs {args.pretrain_epochs}, not the package default."),
        "",
        "| | method | head (chosen) | macro-F1 | kappa | accuracy | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for group, method, r in rows:
        lines.append(f"| {group} | {method} | {r.get('head', '')} | {r['macro_f1']:.3f} | "
                     f"{r['kappa']:.3f} | {r['accuracy']:.3f} | {r['seconds']:.0f} |")
    if sel:
        lines += ["", f"`mode=\"auto\"` ({sel['method']}, {sel['folds']} folds over the training "
                  "subjects), cross-validated macro-F1 / kappa of each candidate:", ""]
        for name, s in sorted(sel["scores"].items(), key=lambda kv: -kv[1]["macro_f1"]):
            lines.append(f"- {name}: {s['macro_f1']:.3f} / {s['kappa']:.3f} "
                         f"({s['seconds']:.1f} s)")
    if args.rotate:
        lines += timed("rotations", rotation_rows, run, data_dir, out, ids, subjects, args)
    lines += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    report = run / "reports" / "small_cohort.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    (run / "reports" / "small_cohort.json").write_text(json.dumps(
        {"rows": [{"group": g, "method": m, **{k: v for k, v in r.items() if k != "nights"}}
                  for g, m, r in rows],
         "pretrain": pre, "split": split, "times_s": times, "args": vars(args)},
        indent=2, default=str))
    print(f"written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
