"""Preprocessing throughput and peak memory on a full night, against the plain MNE path.

A synthetic 8-hour night with a clinical montage (6 EEG + 2 EOG + chin + 2 leg EMG + ECG at 256 Hz
or 512 Hz; airflow, nasal pressure, thorax, abdomen at 32 Hz; SpO2 at 1 Hz) is written as EDF by
``sleepfm.synthetic``; each path then runs in a fresh process so peak memory is its own:

- ``sleepfm``: ``preprocess_record`` (own EDF reader, blocked zero-phase filter, HDF5 store);
- ``plain``: what a user would write: ``mne.io.read_raw_edf(preload=True)``, ``raw.resample(128)``,
  then one HDF5 dataset per channel.

Usage::

    python benchmarks/preprocess.py [--hours 8] [--rates 256 512] [--repeats 2] [--out DIR]

Prints hours of PSG per second and peak resident memory (total, and above the interpreter's
baseline after imports) next to the EDF file's size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmHWM = peak resident set, VmRSS = now).

    ``getrusage`` is not used: its maximum survives ``exec`` on Linux, so a child would report
    the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure(path: str, how: str, out_dir: str) -> dict:
    if how == "sleepfm":
        from sleepfm.stages.preprocess import preprocess_record

        base = _status_mb("VmRSS")
        t = time.perf_counter()
        preprocess_record(path, out_dir)
    else:
        import h5py
        import mne

        base = _status_mb("VmRSS")
        t = time.perf_counter()
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
        raw.resample(128.0, verbose="error")
        data = raw.get_data()
        with h5py.File(Path(out_dir) / "plain.h5", "w") as f:
            for name, x in zip(raw.ch_names, data):
                f.create_dataset(name, data=x.astype("float32"), compression="lzf")
    return {"seconds": time.perf_counter() - t, "peak_mb": _status_mb("VmHWM"), "baseline_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[256.0, 512.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--measure", nargs=3, metavar=("EDF", "HOW", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(*args.measure)))
        return

    from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

    scratch = Path(args.out or tempfile.mkdtemp(prefix="sleepfm-bench-"))
    print(f"{'rate':>6} {'path':>8} {'EDF MB':>7} {'s/night':>8} {'h PSG/s':>8} "
          f"{'peak MB':>8} {'above base':>10} {'x raw':>6}")
    for rate in args.rates:
        cfg = SyntheticConfig(duration_h=args.hours, montage="clinical",
                              sample_rates={"eeg": rate, "eog": rate, "emg": rate, "ecg": rate})
        night = generate_night(cfg, seed=0, record_id=f"bench{int(rate)}")
        edf = write_night(night, scratch / "edf")["edf"]
        del night
        size_mb = edf.stat().st_size / 2**20
        results = {}
        for how in ("sleepfm", "plain"):
            runs = []
            for k in range(args.repeats):
                out = scratch / f"{how}{int(rate)}_{k}"
                out.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, __file__, "--measure", str(edf), how, str(out)]
                runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                      text=True).stdout.strip().splitlines()[-1]))
            best = min(runs, key=lambda r: r["seconds"])
            results[how] = best
            extra = best["peak_mb"] - best["baseline_mb"]
            print(f"{rate:>6g} {how:>8} {size_mb:>7.0f} {best['seconds']:>8.2f} "
                  f"{args.hours / best['seconds']:>8.2f} {best['peak_mb']:>8.0f} {extra:>10.0f} "
                  f"{extra / size_mb:>6.2f}")
        speedup = results["plain"]["seconds"] / results["sleepfm"]["seconds"]
        print(f"{rate:>6g} speed-up over the plain path: {speedup:.1f}x")


if __name__ == "__main__":
    main()
