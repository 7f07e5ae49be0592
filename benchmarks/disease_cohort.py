"""The held-out disease table: Cox head vs the demographics baseline vs permuted embeddings.

The whole pipeline into one run directory — preprocess, pre-train, embed, ``finetune disease``,
``evaluate disease`` — on a cohort of recordings with outcome tables (``--cohort DIR``: EDF/BDF
files and ``DIR/outcomes``), or by default on a **synthetic** cohort generated first
(:func:`sleepfm.write_synthetic_cohort`: short nights whose outcomes follow a known hazard of what
the nights show). Then the control: the same head fitted and scored on the same split with the
night embeddings permuted across records (the nights' link to the outcomes broken, age and sex
kept), ``--permutations`` times. Prints, per phenotype and metric (C-index; AUROC at the
horizon), each model's value with its subject-bootstrap 95 % CI and the paired head - baseline
difference, the time of each stage, and writes it all as JSON beside the run's reports.

Examples
--------
python benchmarks/disease_cohort.py                            # 500 synthetic subjects x 30 min
python benchmarks/disease_cohort.py --subjects 200 --minutes 10 --max-steps 25   # a quick look
python benchmarks/disease_cohort.py --cohort /data/my-cohort --run runs/my-cohort --mode lstm
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sleepfm import (DiseaseConfig, RunDir, embed, evaluate, finetune, load_disease_data,
                     preprocess_directory, pretrain, survival_report, write_synthetic_cohort)
from sleepfm.artifacts import load_heads
from sleepfm.splits import read_split
from sleepfm.stages.disease import fit_head, head_inputs


def permuted_reports(run: RunDir, mode: str, permutations: int, **shared) -> list:
    """Survival reports of the run's head refitted on night embeddings permuted across records."""
    split = read_split(run.split_file("disease"))
    _, record = load_heads(run.head_dir("disease"))
    config = DiseaseConfig(**{**record["config"], "outcomes": None})
    data = load_disease_data(run, embedding=config.embedding,
                             level=config.level if mode == "lstm" else None)
    train, val, test = (data.index(split[p]) for p in ("train", "val", "test"))
    night, steps = data.night.copy(), data.steps
    reports = []
    for seed in range(permutations):
        order = np.random.default_rng(seed).permutation(len(data))
        data.night = night[order]
        data.steps = None if steps is None else [steps[i] for i in order]
        head = fit_head(data, train, val, config, mode)
        risk = head.predict_risk(*head_inputs(data, test, mode, demographics=config.demographics))
        reports.append(survival_report(data.time[test], data.event[test], risk,
                                       phenotypes=data.phenotypes,
                                       groups=np.asarray(data.subjects)[test],
                                       train_time=data.time, train_event=data.event, **shared))
    return reports


def table(evaluation, permuted: list) -> pd.DataFrame:
    """One row per phenotype and metric: value [CI] of each model, head - baseline."""
    summary = evaluation.summary
    rows = []
    for (phenotype, metric), part in summary.groupby(["phenotype", "metric"], sort=False):
        row = {"phenotype": phenotype, "metric": metric,
               "n_events": int(part.n_events.iloc[0])}
        for model, r in part.set_index("model").iterrows():
            row[model] = f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        perm = [p.summary.set_index(["phenotype", "metric"]).loc[(phenotype, metric)]
                for p in permuted]
        if perm:
            row["permuted"] = f"{perm[0].value:.3f} [{perm[0].ci_low:.3f}, {perm[0].ci_high:.3f}]"
            row["permuted (mean)"] = round(float(np.mean([p.value for p in perm])), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, help="recordings + outcomes/ (default: generate a "
                        "synthetic cohort into RUN/bench_cohort)")
    parser.add_argument("--run", type=Path, default=Path("runs/disease-bench"))
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--encoder", default="sleepfm_tiny")
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--mode", default="linear", choices=["linear", "mlp", "lstm"])
    parser.add_argument("--test-size", type=float, default=0.3)
    parser.add_argument("--horizon", type=float, default=6.0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--permutations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    run = RunDir(args.run)
    timings = {}

    def timed(name, fn, *a, **k):
        start = time.perf_counter()
        out = fn(*a, **k)
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {timings[name]} s", flush=True)
        return out

    cohort, synthetic = args.cohort, args.cohort is None
    if synthetic:
        cohort = args.run / "bench_cohort"
        if not (cohort / "outcomes").is_dir():
            timed("generate", write_synthetic_cohort, cohort, args.subjects,
                  minutes=args.minutes, seed=args.seed)
    batch = timed("preprocess", preprocess_directory, cohort, run, workers=2, progress=False)
    print(batch.summary)
    timed("pretrain", pretrain, run, encoder=args.encoder, max_epochs=1,
          max_steps=args.max_steps, batch_size=16, val_fraction=0.1, patience=0,
          seed=args.seed, progress=False)
    timed("embed", embed, run, progress=False)
    head = timed("finetune", finetune, run, "disease", outcomes=str(cohort / "outcomes"),
                 mode=args.mode, test_size=args.test_size, seed=args.seed)
    print(head)
    evaluation = timed("evaluate", evaluate, run, "disease", horizon=args.horizon,
                       n_boot=args.n_boot, seed=args.seed)
    shared = dict(horizon=args.horizon, n_boot=args.n_boot, seed=args.seed)
    permuted = timed("permuted", permuted_reports, run, args.mode, args.permutations, **shared)

    result = table(evaluation, permuted)
    means = evaluation.summary.groupby(["model", "metric"]).value.mean().unstack().round(3)
    for i, p in enumerate(permuted):
        means.loc[f"permuted {i}"] = p.summary.groupby("metric").value.mean().round(3)
    label = "SYNTHETIC cohort" if synthetic else f"cohort {cohort}"
    print(f"\n{label}: {evaluation.metrics['n_test_subjects']} held-out subjects, head "
          f"{args.mode}, horizon {args.horizon:g} y, {args.n_boot} bootstrap resamples")
    print(result.to_string(index=False))
    print("\nmeans over phenotypes:\n" + means.to_string())
    out = run.report_dir("disease") / "benchmark.json"
    out.write_text(json.dumps({"synthetic": synthetic, "args": {k: str(v) for k, v in
                                                                 vars(args).items()},
                               "timings_s": timings, "table": result.to_dict(orient="records"),
                               "means": means.reset_index().to_dict(orient="records")}, indent=1))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
