"""Preprocessing and embedding on a Dask cluster beside the local process pool, on one folder.

Writes ``--nights`` synthetic nights (clinical montage at 256 Hz), preprocesses them with the
local pool (``--workers N``) and on a Dask ``LocalCluster`` of N worker processes
(``--scheduler``), embeds the store both ways, checks that the files are identical, and prints
the wall times. Point ``--scheduler`` at a real cluster (``dask scheduler`` + ``dask worker``) to
measure it instead of a local one; the folders must then be on a shared file system.

    python benchmarks/cluster.py [--nights 8] [--hours 2] [--workers 2] [--scheduler tcp://...]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from sleepfm import RunDir, SyntheticConfig, embed, generate_cohort, preprocess_directory, write_night
from sleepfm.artifacts import save_encoder
from sleepfm.models import create_encoder


def _same_files(a: Path, b: Path) -> bool:
    for path in sorted(a.glob("*.h5")):
        with h5py.File(path) as f, h5py.File(b / path.name) as g:
            names = []
            f.visit(names.append)
            for name in names:
                if isinstance(f[name], h5py.Dataset) and not np.array_equal(f[name][()], g[name][()]):
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=8)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--encoder", default="sleepfm_tiny")
    parser.add_argument("--scheduler", help="a running Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--out", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    scratch = Path(args.out or tempfile.mkdtemp(prefix="sleepfm-cluster-"))
    config = SyntheticConfig(duration_h=args.hours, montage="clinical")
    for night in generate_cohort(args.nights, config, seed=0):
        write_night(night, scratch / "edf")
    torch.manual_seed(0)
    encoder = save_encoder(create_encoder(args.encoder), scratch / "encoder")

    cluster = None
    if args.scheduler is None:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    scheduler = args.scheduler or cluster.scheduler_address
    times = {}
    for name, where in (("local pool", {"workers": args.workers}), ("Dask", {"scheduler": scheduler})):
        run = RunDir(scratch / name.replace(" ", "_"))
        t = time.perf_counter()
        batch = preprocess_directory(scratch / "edf", run, **where)
        times[(name, "preprocess")] = time.perf_counter() - t
        t = time.perf_counter()
        status = embed(run, checkpoint=encoder, scheduler=where.get("scheduler"))
        times[(name, "embed")] = time.perf_counter() - t
        print(f"{name}: {batch.summary}; embedded {sum(v == 'ok' for v in status.values())}")
    if cluster is not None:
        cluster.close()
    same = all(_same_files(RunDir(scratch / "local_pool") / sub, RunDir(scratch / "Dask") / sub)
               for sub in ("hdf5", "embeddings"))
    print(f"\n{args.nights} synthetic nights of {args.hours:g} h (clinical montage, 256 Hz), "
          f"{args.workers} workers; files identical: {same}")
    print("| stage | local pool (s) | Dask (s) |\n|---|---|---|")
    for stage in ("preprocess", "embed"):
        print(f"| {stage} | {times[('local pool', stage)]:.1f} | {times[('Dask', stage)]:.1f} |")


if __name__ == "__main__":
    main()
