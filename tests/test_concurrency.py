"""One writer at a time, no orphans, nothing left behind: the run directory's lock, worker
processes that die with their parent, and temporary files of killed runs removed on the next."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMALL_CHANNELS
from sleepfm.artifacts import save_encoder
from sleepfm.exceptions import StoreError
from sleepfm.models import create_encoder
from sleepfm.rundir import RunDir
from sleepfm.stages.embed import embed
from sleepfm.stages.preprocess import preprocess_directory

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sleepfm.cli", *map(str, args)], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300, **kwargs)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, make_edf):
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=30)
    run = RunDir(tmp_path / "run")
    with run.lock("pretrain"):
        proc = _cli("preprocess", tmp_path / "in", "--out", run.path, "--quiet")
        with run.lock("embed"):  # the same process may nest stages
            pass
    assert proc.returncode == 2, proc.stderr
    assert f"{run.path} is being written by `sleepfm pretrain` (pid {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr and not (run.hdf5_dir / "rec.h5").exists()
    assert _cli("preprocess", tmp_path / "in", "--out", run.path, "--quiet").returncode == 0


def test_a_killed_holder_releases_the_lock(tmp_path):
    run = RunDir(tmp_path / "run")
    code = ("import sys, time; from sleepfm.rundir import RunDir\n"
            "with RunDir(sys.argv[1]).lock('embed'):\n    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run.path)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreError, match="being written by `sleepfm embed`"):
        with run.lock("finetune"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run.lock("finetune"):
        pass


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux parent-death signal")
def test_killed_preprocess_leaves_no_orphan_workers(tmp_path, make_edf, snapshot, temporaries):
    data = tmp_path / "in"
    for i in range(8):
        make_edf(data / f"r{i}.edf", SMALL_CHANNELS, duration=600, seed=i)
    parent = subprocess.Popen([sys.executable, "-m", "sleepfm.cli", "preprocess", str(data),
                               "--out", str(tmp_path / "run"), "--workers", "2", "--quiet"],
                              cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers = []
    while len(workers) < 2 and time.time() < deadline and parent.poll() is None:
        workers = _children(parent.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the pool did not start"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "worker processes outlived their parent"
    # The next run removes what the killed one left and finishes the store as one run would.
    assert _cli("preprocess", data, "--out", tmp_path / "run", "--workers", "2",
                "--quiet").returncode == 0
    assert temporaries(tmp_path / "run") == []
    assert preprocess_directory(data, tmp_path / "ref").summary == "8 ok, 0 failed"
    assert snapshot(tmp_path / "run") == snapshot(tmp_path / "ref")


def test_temporaries_of_killed_writes_are_removed(tmp_path, make_edf, temporaries):
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=60)
    run = RunDir(tmp_path / "run")
    preprocess_directory(tmp_path / "in", run)
    save_encoder(create_encoder("sleepfm_tiny"), run.encoder_dir)
    run.embeddings_dir.mkdir()
    (run.embeddings_dir / ".rec.h5.x1y2.tmp").write_bytes(b"half")  # a killed embed
    (run.checkpoints_dir / ".encoder.a1b2.tmp").mkdir()  # a killed encoder export
    (run.checkpoints_dir / ".encoder.a1b2.tmp" / "model.safetensors").write_bytes(b"half")
    run.lightning_dir.mkdir()
    (run.lightning_dir / "last.ckpt.tmp").write_bytes(b"half")  # a killed checkpoint save
    assert len(temporaries(run.path)) == 3
    assert embed(run)["rec"] == "ok"
    assert temporaries(run.path) == []
