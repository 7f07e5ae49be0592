"""Sleep staging: SleepFM embeddings + LSTM head vs a randomly initialised encoder vs YASA.

For a folder of recordings with hypnograms (Sleep-EDF ``*-PSG.edf`` + ``*-Hypnogram.edf`` pairs, or
SleepFM EDF + ``<record_id>.csv``), or a synthetic cohort written first (``--synthetic N``):

1. preprocess → pre-train the encoder → embed → fine-tune the LSTM staging head on the training
   subjects → macro-F1 and Cohen's kappa with subject-level bootstrap 95 % CIs on the held-out
   test subjects;
2. the same head on embeddings of a *randomly initialised* encoder of the same architecture
   (saved with ``save_checkpoint``, never trained), with the very same split: what pre-training
   buys;
3. YASA's ``SleepStaging`` (its pre-trained LightGBM classifier) on the very same test nights, on
   an EEG, EOG and EMG channel read from the EDF with MNE.

Prints a markdown table and writes it to ``RUN_DIR/reports/staging_compare.md``.

Examples
--------
python benchmarks/staging_compare.py --synthetic 40 --hours 2 --out runs/compare
python benchmarks/staging_compare.py --data /path/to/sleep-edf --out runs/sleep-edf
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from sleepfm import (FinetuneConfig, PretrainConfig, RunDir, create_encoder, embed,  # noqa: E402
                     evaluate, finetune, load_task_data, preprocess_directory, pretrain,
                     save_encoder, staging_report)
from sleepfm.io.cohort import write_cohort  # noqa: E402
from sleepfm.synthetic import SyntheticConfig, generate_cohort, write_night  # noqa: E402

logger = logging.getLogger("staging_compare")


# A reduced clinical montage: YASA's preferred inputs (central EEG, EOG, chin EMG) plus the ECG and
# airflow a multimodal encoder can also use.
SYNTHETIC_CHANNELS = ["C4-M1", "E1-M2", "Chin", "ECG", "Airflow"]


def write_synthetic(directory: Path, n: int, *, hours: float, artefact_rate: float, seed: int) -> None:
    """``n`` synthetic subjects, one night each (:data:`SYNTHETIC_CHANNELS`, 100 Hz) + cohort.csv."""
    directory.mkdir(parents=True, exist_ok=True)
    config = SyntheticConfig(duration_h=hours, montage="clinical", artefact_rate=artefact_rate,
                             sample_rates={"eeg": 100.0, "eog": 100.0, "emg": 100.0, "ecg": 100.0,
                                           "resp": 16.0})
    rows = []
    for night in generate_cohort(n, config, seed=seed):
        write_night(night.pick(SYNTHETIC_CHANNELS), directory)
        s = night.subject
        rows.append({"record_id": night.record_id, "subject_id": s["subject_id"],
                     "age": s.get("age"), "sex": s.get("sex"), "ahi": s.get("ahi")})
    write_cohort(pd.DataFrame(rows), directory / "cohort.csv")


def sleep_edf_cohort(data: Path, run: Path, record_ids: list[str]) -> None:
    """Sleep-EDF record ids ``SC4ssN``: subject ``ss``; both nights of a subject stay together."""
    if (run / "cohort.csv").is_file() or not all(r[:2] in ("SC", "ST") for r in record_ids):
        return
    write_cohort(pd.DataFrame({"record_id": record_ids, "subject_id": [r[:5] for r in record_ids]}),
                 run / "cohort.csv")


def yasa_stages(edf: Path, n_epochs: int) -> np.ndarray:
    """YASA's predicted stages (AASM 0-4) for one EDF, padded/trimmed to ``n_epochs``."""
    from sleepfm.yasa_baseline import fit_length, yasa_predict_proba

    # Epochs past YASA's last whole 30-s epoch are called N2, as before.
    return fit_length(yasa_predict_proba(edf).argmax(axis=1), n_epochs, fill=2, record=edf.name)


def random_encoder_run(run: Path, encoder: str, seed: int) -> Path:
    """A run sharing ``run``'s store and labels whose encoder is untrained (random weights)."""
    other = run.parent / f"{run.name}-random-encoder"
    for sub in ("hdf5", "labels"):
        link = other / sub
        if not link.exists():
            other.mkdir(parents=True, exist_ok=True)
            link.symlink_to((run / sub).resolve(), target_is_directory=True)
    if (run / "cohort.csv").is_file():
        shutil.copy(run / "cohort.csv", other / "cohort.csv")
    torch.manual_seed(seed)
    model = create_encoder(encoder)
    save_encoder(model, RunDir(other).encoder_dir,
                 metadata={"note": "randomly initialised, never trained", "seed": seed})
    return other


def _fmt(row) -> str:
    return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder of EDFs with hypnograms (ignored with --synthetic)")
    p.add_argument("--out", default="runs/staging_compare", help="run directory")
    p.add_argument("--synthetic", type=int, metavar="N", help="write N synthetic subjects first")
    p.add_argument("--hours", type=float, default=2.0, help="synthetic night length (h)")
    p.add_argument("--artefact-rate", type=float, default=2.0,
                   help="synthetic artefact bursts per hour")
    p.add_argument("--encoder", default="sleepfm_tiny")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--head-epochs", type=int, default=15)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=1, help="preprocessing processes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    run = Path(args.out)
    times: dict[str, float] = {}

    def step(name):
        times[name] = time.perf_counter()
        logger.info("%s ...", name)

    def done(name):
        times[name] = time.perf_counter() - times[name]
        logger.info("%s: %.1f s", name, times[name])

    if args.synthetic:
        data = run.parent / f"{run.name}-source"
        step("synthesise")
        if not (data / "cohort.csv").is_file():
            write_synthetic(data, args.synthetic, hours=args.hours,
                            artefact_rate=args.artefact_rate, seed=args.seed)
        done("synthesise")
    elif args.data:
        data = Path(args.data)
    else:
        p.error("pass --data DIR or --synthetic N")

    step("preprocess")
    batch = preprocess_directory(data, run, workers=args.workers)
    done("preprocess")
    ok_ids = sorted(r.record_id for r in batch.ok)
    sleep_edf_cohort(data, run, ok_ids)

    step("pretrain")
    if not RunDir(run).encoder_dir.is_dir():
        pretrain(run, PretrainConfig(encoder=args.encoder, max_epochs=args.pretrain_epochs,
                                     batch_size=16, lr=3e-3, val_fraction=0.1, patience=0,
                                     warmup_fraction=0.1, seed=args.seed), progress=False)
    done("pretrain")
    step("embed")
    embed(run, batch_size=16)
    done("embed")

    head_cfg = FinetuneConfig(mode="lstm", epochs=args.head_epochs, seed=args.seed,
                              skip_unlabelled=True)
    step("finetune")
    result = finetune(run, "staging", head_cfg)
    done("finetune")
    step("evaluate")
    ev = evaluate(run, "staging", n_boot=args.n_boot, seed=args.seed)
    done("evaluate")
    split_path = RunDir(run).split_file("staging")

    step("random encoder (embed + head + evaluate)")
    rand_run = random_encoder_run(run, args.encoder, args.seed)
    embed(rand_run, batch_size=16)
    finetune(rand_run, "staging", head_cfg, split=split_path)
    ev_rand = evaluate(rand_run, "staging", n_boot=args.n_boot, seed=args.seed)
    done("random encoder (embed + head + evaluate)")

    step("yasa")
    test = load_task_data(run, "staging", record_ids=result.split["test"], with_embeddings=False)
    sources = {r["record_id"]: Path(r["source"]) for r in
               RunDir(run).stage_info("preprocess")["records"]}
    yasa_pred, yasa_err = [], {}
    keep = []
    for i, rid in enumerate(test.record_ids):
        try:
            yasa_pred.append(yasa_stages(sources[rid], len(test.y[i])))
            keep.append(i)
        except Exception as err:  # report, go on with the other nights
            yasa_err[rid] = f"{type(err).__name__}: {err}"
            logger.error("YASA failed on %s: %s", rid, yasa_err[rid])
    yasa_rep = staging_report([test.y[i] for i in keep], yasa_pred,
                              groups=[test.subjects[i] for i in keep], n_boot=args.n_boot,
                              seed=args.seed) if keep else None
    done("yasa")

    rows = []
    for name, summary, n in [
        (f"SleepFM ({args.encoder}, pre-trained) + LSTM head", ev.summary, ev.metrics["n_test_nights"]),
        (f"Random-init encoder ({args.encoder}) + LSTM head", ev_rand.summary,
         ev_rand.metrics["n_test_nights"]),
        ("YASA SleepStaging (pre-trained LightGBM, EEG+EOG+EMG)",
         yasa_rep.summary if yasa_rep is not None else None, len(keep))]:
        if summary is None:
            rows.append(f"| {name} | failed | | | {n} |")
            continue
        s = summary.set_index("metric")
        rows.append(f"| {name} | {_fmt(s.loc['macro_f1'])} | {_fmt(s.loc['kappa'])} | "
                    f"{s.loc['accuracy', 'value']:.3f} | {n} |")
    n_train = len(result.train_records)
    synthetic = bool(args.synthetic)
    lines = [
        "# Sleep staging on held-out subjects",
        "",
        ("**These figures are on SYNTHETIC data** (`sleepfm.synthetic`, "
         f"{args.synthetic} subjects × one {args.hours:g}-h night, channels "
         f"{', '.join(SYNTHETIC_CHANNELS)}, {args.artefact_rate:g} artefact bursts per hour); "
         "they say how well each method recovers "
         "the generator's stage structure, not how it does on patients."
         if synthetic else f"Data: `{data}` ({len(ok_ids)} recordings)."),
        "",
        f"Split by subject (seed {args.seed}): {n_train} training nights, "
        f"{len(result.split['val'])} validation, {len(result.split['test'])} test nights of "
        f"{len(set(test.subjects))} test subjects. 5 AASM classes; 95 % CIs from "
        f"{args.n_boot} subject-level bootstrap resamples.",
        f"Encoder `{args.encoder}`, pre-trained {args.pretrain_epochs} epochs "
        f"(loo_contrastive); LSTM head {args.head_epochs} epochs; YASA {__import__('yasa').__version__} "
        "off the shelf (not retrained).",
        "",
        "| method | macro-F1 [95 % CI] | Cohen's κ [95 % CI] | accuracy | test nights |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + ".",
    ]
    if yasa_err:
        lines += ["", f"YASA failed on: {yasa_err}"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = run / "reports" / "staging_compare.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (run / "reports" / "staging_compare.json").write_text(json.dumps({
        "sleepfm": ev.metrics, "random_encoder": ev_rand.metrics,
        "yasa": yasa_rep.to_dict() if yasa_rep is not None else None, "times_s": times,
        "args": vars(args)}, indent=2, default=str))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
