"""The dashboard on a 10,000-subject run: time to first render per page, and re-ranking after a filter.

The run is generated (synthetic, and said so): 10,000 subjects with age, sex, race, site and the
night facts of :mod:`sleepfm.synthetic_cohort` (apnea burden, N3 share, heart rate, arousals)
drawn directly, outcomes from its known hazard, and per-modality night embeddings that carry those
facts plus noise (a random projection; no EDF is written, so the record viewer has no store to
show). Then the real ``finetune disease`` (linear) and ``evaluate disease`` (1,000 resamples,
fairness, enrichment, attribution) write the reports the dashboard reads.

Each page is rendered with Streamlit's AppTest (the server side of a render: the page's script,
its reads and its charts), cold (empty caches) and warm; then the trial-enrichment page's filters
change (sex, site, age, q) and each re-rank is timed. Peak resident memory is the process's.

Examples
--------
python benchmarks/dashboard.py                         # 10,000 subjects in runs/dashboard-bench
python benchmarks/dashboard.py --subjects 2000 --run /tmp/dash2k
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sleepfm import RunDir, evaluate, finetune, write_outcomes
from sleepfm.io.cohort import write_cohort
from sleepfm.io.embeddings import write_embeddings
from sleepfm.synthetic_cohort import FACT_SCALES, RACES, SITES, draw_outcomes

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
#: Which facts each modality's embedding carries.
CARRIES = {"BAS": ("n3", "arousal"), "ECG": ("heart_rate",), "EMG": ("arousal",),
           "RESP": ("apnea",)}


def facts(n: int, seed: int) -> pd.DataFrame:
    """Subjects and what their nights would show, drawn directly."""
    rng = np.random.default_rng(seed)
    ids = [f"BEN{i:05d}" for i in range(n)]
    return pd.DataFrame({
        "record_id": [f"{s}_N1" for s in ids], "subject_id": ids,
        "age": np.round(rng.uniform(20, 85, n), 1), "sex": rng.choice(["F", "M"], n),
        "race": rng.choice(RACES, n, p=(.6, .2, .12, .08)), "site": rng.choice(SITES, n),
        "apnea": np.log1p(rng.gamma(1.5, 8.0, n)), "n3": np.clip(rng.normal(.15, .1, n), 0, .6),
        "heart_rate": rng.normal(63, 6, n), "arousal": rng.gamma(4.0, 3.0, n)})


def build(run: RunDir, n: int, dim: int, seed: int) -> None:
    """Write the generated run (embeddings, cohort, outcomes) and its disease reports."""
    table = facts(n, seed)
    rng = np.random.default_rng((seed, 1))
    z = {k: (table[k].to_numpy() - m) / s for k, (m, s) in FACT_SCALES.items() if k != "age"}
    run.embeddings_dir.mkdir(parents=True, exist_ok=True)
    projections = {m: rng.normal(size=(len(k), dim)) for m, k in CARRIES.items()}
    night = {m: np.column_stack([z[k] for k in keys]) @ projections[m]
             + rng.normal(scale=1.0, size=(n, dim)) for m, keys in CARRIES.items()}
    start = time.perf_counter()
    for i, rid in enumerate(table.record_id):
        named = {m: night[m][i] for m in CARRIES}
        named["fused"] = np.mean(list(named.values()), axis=0)
        write_embeddings(run.embedding_file(rid), {"night": named},
                         {"record_id": rid, "modalities": list(CARRIES),
                          "checkpoint": "generated", "checkpoint_id": "generated",
                          "fingerprint": f"generated-{seed}-{i}"})
    print(f"wrote {n} embeddings files in {time.perf_counter() - start:.1f} s", flush=True)
    write_cohort(table[["record_id", "subject_id", "age", "sex", "race", "site"]], run.cohort_file)
    outcomes = draw_outcomes(table, seed=seed)
    folder = run.path / "generated_outcomes"
    write_outcomes(outcomes, folder)
    run.record_stage("embed", {"config": {"generated_by": "benchmarks/dashboard.py",
                                          "subjects": n, "dim": dim, "seed": seed}})
    start = time.perf_counter()
    finetune(run, "disease", outcomes=str(folder), mode="linear", seed=seed)
    print(f"finetune disease: {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    evaluate(run, "disease", n_boot=1000, figures=False)
    print(f"evaluate disease: {time.perf_counter() - start:.1f} s", flush=True)


def timed_run(at) -> float:
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    if at.exception:
        raise RuntimeError([e.value for e in at.exception])
    return seconds


def measure(run: RunDir) -> dict:
    """Cold and warm render of each page; the enrichment page's re-rank after each filter."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["SLEEPFM_DASHBOARD_RUN"] = str(run.path)
    pages = {"overview": None, "fairness": "pages/fairness.py",
             "enrichment": "pages/enrichment.py", "embeddings": "pages/embeddings.py"}
    renders = {}
    for name, page in pages.items():
        st.cache_data.clear()
        times = []
        for _ in range(2):  # cold, then warm
            at = AppTest.from_file(APP, default_timeout=600)
            if page:
                timed_run(at)  # the app's default page, then the switch is the render timed
                at.switch_page(page)
            times.append(timed_run(at))
        renders[name] = {"cold_s": round(times[0], 3), "warm_s": round(times[1], 3)}
    at = AppTest.from_file(APP, default_timeout=600)
    timed_run(at)
    at.switch_page("pages/enrichment.py")
    timed_run(at)
    widget = {w.label: w for w in [*at.multiselect, *at.slider]}
    changes = {"sex": lambda: widget["sex"].set_value(widget["sex"].value[:1]),
               "site": lambda: widget["site"].set_value(widget["site"].value[:2]),
               "age": lambda: widget["age"].set_value((40.0, 70.0)),
               "q": lambda: widget["fraction recruited (q)"].set_value(0.1)}
    rerank = {}
    for name, change in changes.items():
        change()
        rerank[name] = round(timed_run(at), 3)
        widget = {w.label: w for w in [*at.multiselect, *at.slider]}
    eligible = next(m.value for m in at.metric if m.label == "eligible candidates")
    return {"render_s": renders, "rerank_s": rerank, "eligible_after_filters": eligible}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--run", type=Path, default=Path("runs/dashboard-bench"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = RunDir(args.run)
    stamp = run.path / "generated.json"
    settings = {"subjects": args.subjects, "dim": args.dim, "seed": args.seed}
    if not stamp.is_file() or json.loads(stamp.read_text()) != settings:
        build(run, args.subjects, args.dim, args.seed)
        stamp.write_text(json.dumps(settings))
    result = measure(run)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nSYNTHETIC run of {args.subjects} subjects ({run.path}); AppTest renders, seconds:")
    print(pd.DataFrame(result["render_s"]).T.to_string())
    print("re-rank on the trial-enrichment page after changing:",
          ", ".join(f"{k} {v:.3f} s" for k, v in result["rerank_s"].items()),
          f"(eligible after all filters: {result['eligible_after_filters']})")
    print(f"peak resident memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
