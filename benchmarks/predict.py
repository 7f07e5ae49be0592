"""Staging a new night: ``sleepfm predict`` (streaming) against the store path and YASA.

Synthetic full nights with a clinical montage (6 EEG + 2 EOG + chin + 2 leg EMG + ECG at 256 Hz;
airflow, nasal pressure, thorax, abdomen at 32 Hz; SpO2 at 1 Hz) are written as EDF by
``sleepfm.synthetic`` into a scratch folder. A run is built once: a randomly initialised encoder
(``--arch``, default ``sleepfm_base``; time and memory do not depend on the weights) embeds six
30-minute synthetic nights of the same montage, and an LSTM staging head is trained on them, so
the head is a real, trained one. Each contender then stages each night in a fresh process, so
its peak memory is its own:

- ``sleepfm predict``: the command line, ``sleepfm predict NIGHT.edf --run RUN --out CSV``
  (streaming: EDF → in-memory preprocessing → encoder → head, one process, nothing on disk);
- ``store path``: what ``sleepfm predict`` did before it streamed: ``preprocess_record`` into a
  temporary run (HDF5 store), ``sleepfm embed`` (which imports Lightning), the head on the
  embeddings read back;
- ``YASA``: what a YASA user writes: ``mne.io.read_raw_edf(preload=True)`` then
  ``yasa.SleepStaging(raw, eeg_name, eog_name, emg_name).predict()``;
- ``YASA, 3 leads``: :func:`sleepfm.yasa_baseline.yasa_predict_proba`, which loads only the
  three channels YASA reads (YASA's fastest use);
- ``sleepfm predict, folder`` and ``YASA, folder`` (with ``--nights`` 2 or more): every night
  staged in one process, ``sleepfm predict FOLDER`` against a loop of the YASA calls above, as a
  cohort is staged; their figures are per night, so the imports count once per folder;
- ``--encoder NAME``: ``sleepfm predict`` again with a run whose encoder is another registered
  family (e.g. ``sleepfm_reference``); skipped, with the reason, when the name is not registered
  or its encoder cannot be saved, embedded or streamed.

Times are the best of ``--repeats`` runs, taken in turns so a change in the machine's load touches
every contender alike: ``process s`` is the whole command as a user waits for it (interpreter
start and imports included), ``work s`` what follows the imports. Peak RSS is the process's
VmHWM. Every contender gets ``--threads`` OpenMP/BLAS threads (default 1: on a shared machine more
threads than free cores make PyTorch's parallel loops many times slower); ``--workers`` is
``sleepfm predict --threads`` (channels preprocessed at once; default 1, its own default). Python
caches compiled modules as it does for a user (``PYTHONDONTWRITEBYTECODE`` is unset for the
contenders: installed packages such as YASA and PyTorch come precompiled, a source checkout of
sleepfm is compiled on its first run), and every contender's process ends as the ``sleepfm``
command ends: what is still alive is frozen (``gc.freeze``), so the interpreter's last garbage
collection skips it (about 0.8 s with PyTorch loaded; a YASA script ending as usual would take
longer than measured here). The load average is printed before and after.

Usage::

    python benchmarks/predict.py [--hours 8] [--nights 1] [--repeats 3] [--threads 1]
                                 [--workers 1] [--encoder sleepfm_reference] [--out DIR]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The leads a YASA user passes for the clinical montage (central EEG, left EOG, chin EMG).
YASA_LEADS = {"eeg_name": "C4-M1", "eog_name": "E1-M2", "emg_name": "Chin"}
CONTENDERS = ("sleepfm predict", "store path", "YASA", "YASA, 3 leads", "sleepfm predict, folder",
               "YASA, folder")


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmHWM = peak resident set, VmRSS = now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _store_path(edf: str, run_dir: str, out: str) -> None:
    """``sleepfm predict`` as it was: a temporary run with an HDF5 store and embeddings."""
    import numpy as np

    from sleepfm.artifacts import load_heads
    from sleepfm.io.embeddings import read_embeddings
    from sleepfm.rundir import RunDir
    from sleepfm.stages.embed import embed
    from sleepfm.stages.inference import head_outputs
    from sleepfm.stages.preprocess import preprocess_record
    from sleepfm.stages.staging_model import run_preprocess_config

    run, tmp = RunDir(run_dir), RunDir(tempfile.mkdtemp(prefix="store-", dir=out))
    heads, record = load_heads(run.head_dir("staging"))
    rid = preprocess_record(edf, tmp, config=run_preprocess_config(run)).record_id
    embed(tmp, checkpoint=run.encoder_dir)
    x = read_embeddings(tmp.embedding_file(rid), name=record["embedding"])
    proba = head_outputs(heads, record, X=[x])["proba"][0]
    np.savetxt(Path(out) / "store.csv", proba, delimiter=",", fmt="%.4f")


def _measure(how: str, edf: str, run_dir: str, out: str) -> dict:
    """Run one contender in this (fresh) process: work seconds, peak RSS, Lightning loaded
    (``edf`` is the folder of nights for the folder contenders)."""
    t0 = time.perf_counter()
    if how.startswith("sleepfm predict"):
        import sleepfm.stages.predict  # noqa: F401 - what the command imports, before the clock
        from sleepfm.cli import main

        t = time.perf_counter()
        target = Path(out) / ("hyp.csv" if Path(edf).is_file() else "hyp")
        if main(["predict", edf, "--run", run_dir, "--out", str(target), "--quiet",
                 "--threads", os.environ["SLEEPFM_BENCH_WORKERS"]]) != 0:
            raise SystemExit(f"sleepfm predict failed on {edf}")
    elif how == "store path":
        import sleepfm.stages.embed  # noqa: F401 - the imports, before the clock
        import sleepfm.stages.staging_model  # noqa: F401

        t = time.perf_counter()
        _store_path(edf, run_dir, out)
    elif how in ("YASA", "YASA, folder"):
        import mne
        import yasa

        t = time.perf_counter()
        for night in sorted(Path(edf).glob("*.edf")) if Path(edf).is_dir() else [edf]:
            raw = mne.io.read_raw_edf(night, preload=True, verbose="error")
            yasa.SleepStaging(raw, **YASA_LEADS).predict()
    else:
        from sleepfm.yasa_baseline import yasa_predict_proba

        t = time.perf_counter()
        yasa_predict_proba(edf)
    end = time.perf_counter()
    return {"work_s": end - t, "import_s": t - t0, "peak_mb": _status_mb("VmHWM"),
            "lightning": "lightning" in sys.modules or "pytorch_lightning" in sys.modules}


def _run_once(how: str, edf: Path, run: Path, out: Path) -> dict:
    """One contender on one night in a fresh process: its measures, or the error it ended in."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--measure", how.split(" [")[0], str(edf), str(run),
           str(out)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": wall}


def _best_of(rows, nights: list[Path], scratch: Path, repeats: int) -> tuple[dict, dict]:
    """Per contender, the mean over nights of its best run (by process time; a folder
    contender's run is divided by the number of nights); the repeats go round the contenders in
    turn, so a change in the machine's load touches them alike."""
    def targets(how: str) -> list[Path]:
        return [nights[0].parent] if how.endswith("folder") else nights

    runs: dict = {how: {edf: [] for edf in targets(how)} for how, _ in rows}
    failed: dict[str, str] = {}
    for k in range(repeats):
        for how, run in rows:
            for edf in targets(how):
                if how in failed:
                    continue
                tag = re.sub(r"\W+", "_", f"{how}_{edf.stem}_{k}")
                r = _run_once(how, edf, run, scratch / "out" / tag)
                if "error" in r:
                    failed[how] = r["error"]
                runs[how][edf].append(r)
    results = {}
    for how, per_night in runs.items():
        if how in failed:
            continue
        best = [min(rs, key=lambda r: r["process_s"]) for rs in per_night.values()]
        per = len(nights) if how.endswith("folder") else 1
        results[how] = {k: sum(r[k] for r in best) / len(best) / (per if k != "peak_mb" else 1)
                        for k in ("process_s", "work_s", "peak_mb")}
        results[how]["lightning"] = any(r["lightning"] for r in best)
    return results, failed


def _write_nights(directory: Path, n: int, hours: float, seed: int) -> list[Path]:
    """``n`` clinical-montage nights of ``hours`` (with their stage CSVs) as EDF files."""
    from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

    paths = []
    for k in range(n):
        edf = directory / f"N{seed + k:03d}.edf"
        if not edf.is_file():
            night = generate_night(SyntheticConfig(duration_h=hours, montage="clinical"),
                                   seed=seed + k, record_id=edf.stem)
            write_night(night, directory)
        paths.append(edf)
    return paths


def _make_run(run: Path, train_dir: Path, arch: str) -> Path:
    """A run with encoder ``arch`` (random weights) and an LSTM staging head trained on the
    nights of ``train_dir``; reused when it already has its head."""
    import torch

    from sleepfm import FinetuneConfig, embed, finetune, preprocess_directory, save_encoder
    from sleepfm.models import create_encoder

    if (run / "heads" / "staging" / "config.json").is_file():
        return run
    if not (run / "hdf5").is_dir():
        preprocess_directory(train_dir, run)
    torch.manual_seed(0)
    save_encoder(create_encoder(arch), run / "checkpoints" / "encoder")
    embed(run)
    finetune(run, "staging", FinetuneConfig(mode="lstm", features="embedding", epochs=5))
    return run


def _second_family(name: str, scratch: Path, train_dir: Path) -> tuple[Path | None, str]:
    """The run of a second encoder family (``--encoder NAME``), or None and why it is skipped."""
    from sleepfm.models import list_encoders

    if name not in list_encoders():
        return None, f"{name!r} is not a registered encoder (known: {', '.join(list_encoders())})"
    try:
        return _make_run(scratch / f"run_{name}", train_dir, name), ""
    except Exception as err:  # noqa: BLE001 - a family that cannot run here is reported, not fatal
        return None, f"{name}: {type(err).__name__}: {err}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=8.0, help="length of the staged nights")
    parser.add_argument("--nights", type=int, default=1, help="nights staged by each contender")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per night; best")
    parser.add_argument("--arch", default="sleepfm_base", help="our encoder (registered name)")
    parser.add_argument("--encoder", help="a second encoder family to time (registered name, "
                        "e.g. sleepfm_reference)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP/BLAS threads of every contender (default: 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="channels sleepfm predict preprocesses at once (its --threads)")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, help="run these contenders")
    parser.add_argument("--out", help="scratch folder, reused when given (default: temporary)")
    parser.add_argument("--measure", nargs=4, metavar=("HOW", "EDF", "RUN", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(*args.measure)))
        gc.freeze()  # every contender ends as the sleepfm command ends (sleepfm.cli.entry)
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by each contender's process
    os.environ["SLEEPFM_BENCH_WORKERS"] = str(args.workers)

    scratch = Path(args.out or tempfile.mkdtemp(prefix="sleepfm-bench-predict-"))
    train_dir = scratch / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    _write_nights(train_dir, 6, 0.5, seed=100)
    nights = _write_nights(scratch / "nights", args.nights, args.hours, seed=0)
    contenders = [how for how in args.only or CONTENDERS
                  if args.nights > 1 or not how.endswith("folder")]
    rows = [(how, _make_run(scratch / "run", train_dir, args.arch)) for how in contenders]
    skipped = ""
    if args.encoder:
        # Second encoder family: the same streaming command with a run of that family.
        second, skipped = _second_family(args.encoder, scratch, train_dir)
        if second is not None:
            rows.append((f"sleepfm predict [{args.encoder}]", second))

    print(f"{len(nights)} night(s) of {args.hours:g} h, clinical montage at 256 Hz "
          f"({nights[0].stat().st_size / 2**20:.0f} MB EDF); our encoder {args.arch}; "
          f"{args.threads} thread(s), sleepfm predict --threads {args.workers}; "
          f"best of {args.repeats}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    results, failed = _best_of(rows, nights, scratch, args.repeats)
    yasa = results.get("YASA")
    print(f"{'contender (folder: per night)':<34} {'process s':>9} {'work s':>7} "
          f"{'peak RSS MiB':>12} {'Lightning':>9} {'x YASA':>7}")
    for how, r in results.items():
        base = results.get("YASA, folder") if how.endswith("folder") else yasa
        ratio = f"{base['process_s'] / r['process_s']:.1f}x" if base else "-"
        print(f"{how:<34} {r['process_s']:>9.2f} {r['work_s']:>7.2f} {r['peak_mb']:>12.0f} "
              f"{'yes' if r['lightning'] else 'no':>9} {ratio:>7}")
    for how, why in failed.items():
        print(f"{how:<34} failed: {why}")
    if skipped:
        print(f"sleepfm predict [{args.encoder}]: skipped: {skipped}")
    ours = results.get("sleepfm predict")
    if ours and yasa:
        print(f"speed-up of sleepfm predict over YASA: "
              f"{yasa['process_s'] / ours['process_s']:.1f}x per command, "
              f"{yasa['work_s'] / ours['work_s']:.1f}x after imports; peak memory "
              f"{ours['peak_mb'] / 1024:.2f} GiB vs {yasa['peak_mb'] / 1024:.2f} GiB")
    ours, yasa = results.get("sleepfm predict, folder"), results.get("YASA, folder")
    if ours and yasa:
        print(f"staging a folder of {len(nights)} nights: "
              f"{yasa['process_s'] / ours['process_s']:.1f}x YASA's nights per hour")
    print(f"load average {os.getloadavg()[0]:.1f} at the end; scratch folder {scratch}")


if __name__ == "__main__":
    main()
