"""Scale-out on Dask: preprocessing and embedding run unchanged on a distributed cluster
(``--scheduler``), with the same files as a local run, bad files reported, lost workers retried."""
from __future__ import annotations

import os
import signal
import threading
import time

import h5py
import numpy as np
import pytest
import torch

from conftest import SMALL_CHANNELS, build_bad_batch
from sleepfm.artifacts import save_encoder
from sleepfm.cli import main
from sleepfm.exceptions import InvalidParameterError
from sleepfm.models import create_encoder
from sleepfm.rundir import RunDir
from sleepfm.stages.embed import embed
from sleepfm.stages.preprocess import preprocess_directory

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """A real Dask cluster on localhost: a scheduler and 2 worker processes."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as c:
        yield c


def _outcomes(batch):
    return [(r.record_id, r.status, r.reason) for r in batch.results]


def test_preprocess_on_dask_equals_local_and_reports_bad_files(cluster, tmp_path, snapshot,
                                                               make_edf, capsys):
    data = tmp_path / "in"
    expect = build_bad_batch(data)
    for i in range(3):
        make_edf(data / f"extra{i}.edf", SMALL_CHANNELS, duration=120, seed=20 + i)
    local = preprocess_directory(data, tmp_path / "local", workers=2)
    code = main(["preprocess", str(data), "--out", str(tmp_path / "dask"), "--quiet",
                 "--scheduler", cluster.scheduler_address])
    assert code == 1  # bad files are failures, the batch went on
    err = capsys.readouterr().err
    for name, why in expect.items():
        if why:
            assert f"FAILED {data / name}: " in err and why in err
    on_dask = RunDir(tmp_path / "dask").stage_info("preprocess")
    assert on_dask["summary"] == local.summary == "5 ok, 8 failed"
    assert [(r["record_id"], r["status"], r["reason"]) for r in on_dask["records"]] == \
        _outcomes(local)
    assert snapshot(tmp_path / "dask") == snapshot(tmp_path / "local")


def test_a_worker_lost_mid_run_leaves_only_complete_records(cluster, tmp_path, snapshot,
                                                            make_edf, temporaries):
    data = tmp_path / "in"
    for i in range(6):
        make_edf(data / f"r{i}.edf", SMALL_CHANNELS, duration=1800, seed=i)
    reference = preprocess_directory(data, tmp_path / "ref")
    run = RunDir(tmp_path / "run")
    pids = [n.process.pid for n in cluster.workers.values()]
    killed = []

    def kill_one_worker_when_writing():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            if any(run.hdf5_dir.glob(".*.tmp")) if run.hdf5_dir.is_dir() else False:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker_when_writing)
    killer.start()
    batch = preprocess_directory(data, run, scheduler=cluster.scheduler_address)
    killer.join()
    assert killed, "no record was being written while the run lasted"
    assert batch.summary == reference.summary == "6 ok, 0 failed"  # the lost task was retried
    assert temporaries(run.path) == []
    assert snapshot(run.path) == snapshot(tmp_path / "ref")
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarted the worker


def test_embed_on_dask_equals_local(cluster, tmp_path, make_edf):
    data = tmp_path / "in"
    for i, duration in enumerate((900, 400, 120)):
        make_edf(data / f"r{i}.edf", SMALL_CHANNELS, duration=duration, seed=i)
    torch.manual_seed(0)
    encoder = save_encoder(create_encoder("sleepfm_tiny"), tmp_path / "encoder")
    runs = {}
    for name in ("local", "dask"):
        runs[name] = RunDir(tmp_path / name)
        preprocess_directory(data, runs[name])
    assert set(embed(runs["local"], checkpoint=encoder, batch_size=2).values()) == {"ok"}
    status = embed(runs["dask"], checkpoint=encoder, batch_size=2,
                   scheduler=cluster.scheduler_address)
    assert set(status.values()) == {"ok"}
    for rid in status:
        with h5py.File(runs["local"].embedding_file(rid)) as a, \
                h5py.File(runs["dask"].embedding_file(rid)) as b:
            keys = sorted(f"{g}/{d}" for g in a for d in a[g])
            assert keys == sorted(f"{g}/{d}" for g in b for d in b[g])
            for key in keys:
                assert np.array_equal(a[key][()], b[key][()]), (rid, key)
            assert dict(a.attrs) == dict(b.attrs)
    assert set(embed(runs["dask"], checkpoint=encoder, scheduler=cluster.scheduler_address)
               .values()) == {"skipped"}


def test_unreachable_scheduler_is_one_clean_error(tmp_path, make_edf, monkeypatch):
    monkeypatch.setattr("sleepfm.stages.cluster.CONNECT_TIMEOUT", "1s")
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=30)
    with pytest.raises(InvalidParameterError, match="cannot reach the Dask scheduler"):
        preprocess_directory(tmp_path / "in", tmp_path / "run", scheduler="tcp://127.0.0.1:9")
