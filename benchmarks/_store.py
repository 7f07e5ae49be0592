"""A store of full nights with the reference montage size, for the embedding and training benchmarks.

Signals are smoothed noise (throughput does not depend on what the signals mean); each record holds
BAS 10, RESP 7, ECG 2 and EMG 4 channels at 128 Hz, as in the public reference's benchmark montage.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from sleepfm.io.store import RecordWriter, build_index
from sleepfm.rundir import RunDir

MONTAGE = {"BAS": 10, "RESP": 7, "ECG": 2, "EMG": 4}


def make_store(run_dir, *, nights: int, hours: float = 8.0, seed: int = 0) -> Path:
    """Write ``nights`` records of ``hours`` into ``RUN_DIR/hdf5`` (skipping ones that exist)."""
    run = RunDir(run_dir)
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 * 128)
    for k in range(nights):
        rid = f"BENCH{k:03d}"
        path = run.store_file(rid)
        if path.is_file():
            continue
        with RecordWriter(path, rid, sample_rate=128.0, n_samples=n) as w:
            for mod, count in MONTAGE.items():
                for c in range(count):
                    x = np.cumsum(rng.standard_normal(n, dtype=np.float32)) * 0.01
                    x = rng.standard_normal(n, dtype=np.float32) + x - np.float32(x.mean())
                    w.add_channel(mod, f"{mod}{c}", x)
    build_index(run.hdf5_dir)
    return Path(run_dir)


def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not in /proc/self/status")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both store benchmarks share: the store's size, the encoder, the loader."""
    parser.add_argument("--nights", type=int, default=2)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--encoder", default="sleepfm_base")
    parser.add_argument("--out", help="scratch run directory (default: temporary)")


def store_from_args(args: argparse.Namespace) -> Path:
    """The run directory named by ``--out`` (or a temporary one) with its store made."""
    run = Path(args.out or tempfile.mkdtemp(prefix="sleepfm-bench-"))
    return make_store(run, nights=args.nights, hours=args.hours)
