"""Disease prediction at SleepFM's scale: the multi-phenotype Cox head on K = 1,065 phenotypes.

Synthetic cohort: ``n`` subjects with a ``D``-dimensional night embedding and 3 covariates (age,
sex, BMI), ``K`` phenotypes whose log-hazards are a known linear function of both (a sparse
random signal; C-index of the true risk ~0.65-0.75). Follow-up is 1 day to 10 years
(administrative censoring, uniform entry) with some dropout; times are whole days, so many
events are tied. Each phenotype's baseline hazard is set so that its event rate is a chosen value
between 2 % and 30 %, and 5 % of the subjects are not at risk (prevalent disease: NaN).

Each configuration runs in a fresh process and reports the fit's time, split into precompute
(checks, standardisation, risk sets) / loss passes (forward + backward, network included) /
optimiser (the rest), its iterations, the time of one pass of the Cox likelihood alone (the rest
of a pass is the network), and the fit's peak resident memory (VmHWM, reset after the data are
made) above the resident size before it. The fitted head is scored by its test C-index next to
the true risk's, and the linear head's coefficients are correlated with the true ones.

Threads default to 1: torch with more threads than idle cores is many times slower.

Examples
--------
python benchmarks/disease.py                # the table; the largest fits K=1065, n=10000, D=128
python benchmarks/disease.py --small        # the K=100, n=2000, D=32 rows only
python benchmarks/disease.py --threads 2    # on an otherwise idle 2-core machine
python benchmarks/disease.py --one linear float64 1065 12500 128 500  # one configuration
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # --threads sets it for each configuration

import numpy as np
import torch

from sleepfm.eval.survival import concordance_index
from sleepfm.models.heads.cox import CoxHead, Workspace, cox_log_likelihood, risk_sets

N_COVARIATES = 3


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MiB."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """Resident memory now (VmRSS), in MiB."""
    return _status_mb("VmRSS")


def reset_peak() -> None:
    """Return freed heap to the system (glibc ``malloc_trim``), then start VmHWM afresh from the
    current resident size (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    Path("/proc/self/clear_refs").write_text("5")


def synthetic_cohort(n: int, k: int, d: int, *, seed: int = 0):
    """``(X [n, d] float32, covariates [n, 3], durations [n, k], events [n, k], true coef)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    age = rng.uniform(20, 90, n)
    sex = rng.integers(0, 2, n).astype(np.float64)
    bmi = rng.normal(28, 5, n)
    cov = np.stack([age, sex, bmi], axis=1)
    cov_std = (cov - cov.mean(0)) / cov.std(0)
    # Sparse signal: each phenotype depends on 8 embedding dimensions and on age (strongly),
    # sex and BMI (weakly); log-hazard standard deviation ~0.8.
    coef = np.zeros((d + N_COVARIATES, k))
    for j in range(k):
        dims = rng.choice(d, size=min(8, d), replace=False)
        coef[dims, j] = rng.normal(0, 0.25, dims.size)
    coef[d, :] = rng.uniform(0.2, 0.6, k)
    coef[d + 1:, :] = rng.normal(0, 0.1, (N_COVARIATES - 1, k))
    eta = np.concatenate([x, cov_std], axis=1) @ coef  # [n, k] float64
    follow_up = rng.uniform(1, 3650, n)[:, None]  # administrative censoring, days
    dropout = rng.exponential(3650 * 4, (n, k))
    censor = np.minimum(follow_up, dropout)
    rate = rng.uniform(0.02, 0.30, k)
    # t = Exp(1) / (lam * exp(eta)) <= censor  <=>  Exp(1) / (exp(eta) * censor) <= lam.
    unit = rng.exponential(1.0, (n, k)) / np.exp(eta)
    lam = np.array([np.quantile(unit[:, j] / censor[:, j], rate[j]) for j in range(k)])
    t = unit / lam
    events = (t <= censor).astype(np.float64)
    durations = np.ceil(np.minimum(t, censor))  # whole days: ties
    prevalent = rng.random((n, k)) < 0.05
    durations[prevalent] = np.nan
    events[prevalent] = np.nan
    coef_orig = coef.copy()
    coef_orig[d:] /= cov.std(0)[:, None]
    return x, cov, durations, events, coef_orig


def run_one(arch: str, dtype: str, k: int, n: int, d: int, max_iter: int) -> dict:
    torch.manual_seed(0)
    x, cov, durations, events, coef = synthetic_cohort(n, k, d)
    n_train = int(n * 0.8)
    tr, te = slice(0, n_train), slice(n_train, n)
    x_tr, cov_tr = x[tr].copy(), cov[tr].copy()
    t_tr, e_tr = durations[tr].copy(), events[tr].copy()
    out = {"arch": arch, "dtype": dtype, "K": k, "n": n_train, "D": d,
           "threads": torch.get_num_threads(), "event_rate": float(np.nanmean(e_tr)),
           "tied_event_frac": _tied_fraction(t_tr, e_tr)}
    tic = time.perf_counter()  # torch.optim's first use imports torch._dynamo: a one-off cost
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    out["optim_import_s"] = time.perf_counter() - tic
    # The fit first, from a trimmed heap, so that its peak memory is its own.
    reset_peak()
    out["before_fit_mb"] = rss_mb()
    head = CoxHead(arch=arch, dtype=dtype, max_iter=max_iter, penalizer=0.01, lr=3e-3,
                   hidden=128)
    tic = time.perf_counter()
    head.fit(x_tr, t_tr, e_tr, covariates=cov_tr)
    out["fit_s"] = time.perf_counter() - tic
    out["fit_peak_mb"] = peak_mb()
    out["fit_extra_mb"] = out["fit_peak_mb"] - out["before_fit_mb"]
    out["iterations"], out["loss_evals"] = head.n_iter_, head.timings_["n_evals"]
    for key in ("precompute", "loss", "optimizer"):
        out[f"fit_{key}_s"] = head.timings_[key]
    # The pieces, timed apart: the risk sets, and one forward + backward pass of the loss.
    tic = time.perf_counter()
    rs = risk_sets(t_tr, e_tr)
    out["risk_sets_s"] = time.perf_counter() - tic
    eta = torch.zeros((k, n_train), dtype=head.network_.out.weight.dtype, requires_grad=True)
    workspace = Workspace()
    for _ in range(3):  # the last pass is the steady-state one
        tic = time.perf_counter()
        ll = cox_log_likelihood(eta, rs, "efron", workspace=workspace)
        t_fwd = time.perf_counter() - tic
        ll.sum().backward()
        t_fb = time.perf_counter() - tic
    out["loss_forward_s"], out["loss_forward_backward_s"] = t_fwd, t_fb
    out["network_pass_s"] = (head.timings_["loss"] / max(head.timings_["n_evals"], 1)) - t_fb
    risk = head.predict_risk(x[te], covariates=cov[te])
    tic = time.perf_counter()  # what one validation check of an Adam fit costs
    c = [concordance_index(durations[te, j], risk[:, j], events[te, j]) for j in range(k)]
    out["c_index_all_s"] = time.perf_counter() - tic
    true = np.concatenate([x[te], cov[te]], axis=1) @ coef
    c_true = [concordance_index(durations[te, j], true[:, j], events[te, j]) for j in range(k)]
    out["test_c_index"], out["true_c_index"] = float(np.nanmean(c)), float(np.nanmean(c_true))
    if arch == "linear":
        out["coef_corr"] = float(np.corrcoef(head.coef_[:d].ravel(), coef[:d].ravel())[0, 1])
    return out


def _tied_fraction(durations, events) -> float:
    """Fraction of events sharing their day with another event of the same phenotype."""
    tied = total = 0
    for j in range(durations.shape[1]):
        t = durations[events[:, j] == 1, j]
        _, counts = np.unique(t, return_counts=True)
        tied += counts[counts > 1].sum()
        total += t.size
    return float(tied / max(total, 1))


CONFIGS = [  # arch, dtype, K, n (before the 80 % training split), D, max_iter
    ("linear", "float64", 100, 2500, 32, 500),
    ("linear", "float64", 1065, 2500, 128, 500),
    ("linear", "float64", 1065, 6250, 128, 500),
    ("linear", "float64", 1065, 12500, 128, 500),
    ("linear", "float32", 1065, 12500, 128, 500),
    ("mlp", "float32", 100, 2500, 32, 200),
    ("mlp", "float32", 1065, 12500, 128, 200),
    ("mlp", "float64", 1065, 12500, 128, 200),
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="only the K=100 configurations")
    parser.add_argument("--one", nargs=6, metavar=("ARCH", "DTYPE", "K", "N", "D", "MAX_ITER"),
                        help="run one configuration in this process and print its JSON")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/BLAS threads (more than the idle cores slows torch badly)")
    args = parser.parse_args(argv)
    if args.one:
        arch, dtype, k, n, d, it = args.one
        print(json.dumps(run_one(arch, dtype, int(k), int(n), int(d), int(it))))
        return
    rows = []
    for config in CONFIGS:
        if args.small and config[2] > 100:
            continue
        cmd = [sys.executable, __file__, "--one", *map(str, config)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        if len(rows) == 1:
            print(_header())
        print(_row(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def _header() -> str:
    cols = ["arch", "dtype", "K", "n", "D", "events", "tied", "fit s", "iters", "evals",
            "precompute s", "loss passes s", "optimiser s", "per pass s", "of it Cox s",
            "data MiB", "fit +MiB", "C test", "C true", "coef r"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def _row(r: dict) -> str:
    vals = [r["arch"], r["dtype"], r["K"], r["n"], r["D"], f"{r['event_rate']:.1%}",
            f"{r['tied_event_frac']:.0%}", f"{r['fit_s']:.1f}", r["iterations"], r["loss_evals"],
            f"{r['fit_precompute_s']:.2f}", f"{r['fit_loss_s']:.1f}",
            f"{r['fit_optimizer_s']:.1f}", f"{r['fit_loss_s'] / r['loss_evals']:.3f}",
            f"{r['loss_forward_backward_s']:.3f}", f"{r['before_fit_mb']:.0f}",
            f"{r['fit_extra_mb']:.0f}", f"{r['test_c_index']:.3f}", f"{r['true_c_index']:.3f}",
            f"{r['coef_corr']:.3f}" if "coef_corr" in r else "—"]
    return "| " + " | ".join(map(str, vals)) + " |"


if __name__ == "__main__":
    main()
