"""`sleepfm preprocess INPUT --out RUN [--labels DIR] [--workers N] [--allow-truncated]`."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SMALL_CHANNELS, build_bad_batch
from sleepfm.cli import main
from sleepfm.io import labels as L
from sleepfm.io.store import file_is_complete

REPO = Path(__file__).resolve().parents[1]


def _run_cli(*args, timeout=60):
    """Run the real command in a fresh interpreter (as a user would)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "sleepfm.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_inputs_subprocess(tmp_path, temporaries):
    data, run = tmp_path / "in", tmp_path / "run"
    expect = build_bad_batch(data)
    proc = _run_cli("preprocess", data, "--out", run, "--quiet")
    bad = sorted(n for n, why in expect.items() if why)
    good = sorted(n for n, why in expect.items() if not why)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{len(good)} ok, {len(bad)} failed"
    assert "Traceback" not in proc.stderr
    failed_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED ")]
    for name in bad:
        (line,) = [ln for ln in failed_lines if ln.startswith(f"FAILED {data / name}:")]
        assert expect[name] in line, line
        assert name in line.split(": ", 1)[1]  # the reason names the file too
    assert "--allow-truncated" in next(ln for ln in failed_lines if "truncated.edf" in ln)
    # Good files were processed; nothing half-written for the bad ones.
    hdf5 = sorted(p.name for p in (run / "hdf5").iterdir())
    assert hdf5 == sorted([Path(n).stem + ".h5" for n in good] + ["index.h5"])
    assert all(file_is_complete(run / "hdf5" / (Path(n).stem + ".h5")) for n in good)
    assert temporaries(run) == []


def test_exit_zero_when_all_ok_and_reports_channels(tmp_path, make_edf, capsys):
    n = 30 * 256
    make_edf(tmp_path / "in" / "a.edf", SMALL_CHANNELS + [("Position", 1)], duration=30,
             signals={"EOG E1-M2": np.zeros(n)})
    make_edf(tmp_path / "in" / "b.edf", SMALL_CHANNELS, duration=30, seed=3)
    code = main(["preprocess", str(tmp_path / "in"), "--out", str(tmp_path / "run"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.strip().splitlines()[-1] == "2 ok, 0 failed"
    assert "a: unplaced channels skipped: Position" in out
    assert "a: channel 'EOG E1-M2' dropped: " in out and "flat" in out
    # Second run: everything already done.
    code = main(["preprocess", str(tmp_path / "in"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "2 ok (2 already done), 0 failed"


def _truncated_folder(folder, make_edf, edf_damage):
    make_edf(folder / "good.edf", SMALL_CHANNELS, duration=30, seed=1)
    p, _ = make_edf(folder / "cut.edf", SMALL_CHANNELS, duration=30, seed=2)
    record_bytes = 2 * sum(int(fs) for _, fs in SMALL_CHANNELS)
    edf_damage.cut(p, 256 * (len(SMALL_CHANNELS) + 1) + 12 * record_bytes + 7)


def test_truncated_fails_then_allowed(tmp_path, make_edf, edf_damage, capsys, caplog, temporaries):
    _truncated_folder(tmp_path / "in", make_edf, edf_damage)
    run = tmp_path / "run"
    code = main(["preprocess", str(tmp_path / "in"), "--out", str(run), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.strip().splitlines()[-1] == "1 ok, 1 failed"
    line = next(ln for ln in captured.err.splitlines() if ln.startswith("FAILED"))
    assert "cut.edf" in line and "truncated" in line and "--allow-truncated" in line
    assert not (run / "hdf5" / "cut.h5").exists()

    caplog.clear()
    with caplog.at_level("WARNING"):
        code = main(["preprocess", str(tmp_path / "in"), "--out", str(run), "--quiet",
                     "--allow-truncated"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.strip().splitlines()[-1] == "2 ok (1 already done), 0 failed"
    assert any("cut.edf" in r.getMessage() and "truncated" in r.getMessage() and
               r.levelname == "WARNING" for r in caplog.records)
    info = json.loads((run / "run.json").read_text())["stages"]["preprocess"]
    (rec,) = [r for r in info["records"] if r["record_id"] == "cut"]
    assert rec["status"] == "ok" and any("using 12" in w for w in rec["warnings"])
    assert temporaries(run) == []


def test_labels_dir_option(tmp_path, make_edf, capsys):
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=90)
    lab = tmp_path / "labels"
    lab.mkdir()
    L.Hypnogram([2, 3, 4]).to_csv(lab / "rec.csv")
    events = pd.DataFrame({"onset": [1.5, 33.0], "duration": [12.0, 0.5],
                           "type": ["desaturation", "arousal"]})
    events.to_csv(lab / "rec.events.csv", index=False)
    code = main(["preprocess", str(tmp_path / "in"), "--out", str(tmp_path / "run"), "--labels",
                 str(lab), "--quiet"])
    assert code == 0
    out = tmp_path / "run" / "labels"
    assert (out / "rec.csv").read_bytes() == (lab / "rec.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(out / "rec.events.csv"), events)


def test_workers_2_same_store_as_workers_1(tmp_path, make_edf, snapshot, capsys):
    for i in range(4):
        make_edf(tmp_path / "in" / f"r{i}.edf", SMALL_CHANNELS, duration=60, seed=i)
        L.Hypnogram([i % 5, 0]).to_csv(tmp_path / "in" / f"r{i}.csv")
    (tmp_path / "in" / "broken.edf").write_text("not an EDF " * 40)
    codes = []
    for w in (1, 2):
        codes.append(main(["preprocess", str(tmp_path / "in"), "--out", str(tmp_path / f"w{w}"),
                           "--workers", str(w), "--quiet"]))
        assert capsys.readouterr().out.strip().splitlines()[-1] == "4 ok, 1 failed"
    assert codes == [1, 1]
    one, two = snapshot(tmp_path / "w1"), snapshot(tmp_path / "w2")
    assert sorted(one) == sorted(two)
    assert len([k for k in one if k.endswith(".h5")]) == 5
    assert one == two
    recs = [json.loads((tmp_path / f"w{w}" / "run.json").read_text())["stages"]["preprocess"]["records"]
            for w in (1, 2)]
    assert [(r["record_id"], r["status"], r["reason"]) for r in recs[0]] == \
        [(r["record_id"], r["status"], r["reason"]) for r in recs[1]]


CHILD = textwrap.dedent("""
    import os, signal, sys
    from sleepfm.io import store
    from sleepfm.cli import main

    original = store.RecordWriter.add_channel

    def add_channel(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.record_id == "r2":  # hard kill while the third record is being written
            os.kill(os.getpid(), signal.SIGKILL)

    store.RecordWriter.add_channel = add_channel
    sys.exit(main(["preprocess", sys.argv[1], "--out", sys.argv[2], "--quiet"]))
""")


def test_resume_after_kill(tmp_path, make_edf, snapshot, temporaries, capsys):
    data = tmp_path / "in"
    for i in range(4):
        make_edf(data / f"r{i}.edf", SMALL_CHANNELS, duration=60, seed=10 + i)
        L.Hypnogram([i % 5, 1]).to_csv(data / f"r{i}.csv")
    ref, run = tmp_path / "reference", tmp_path / "run"
    assert main(["preprocess", str(data), "--out", str(ref), "--quiet"]) == 0

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(run)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr  # killed, as intended
    done = sorted(p.name for p in (run / "hdf5").iterdir() if not p.name.startswith("."))
    assert done == ["r0.h5", "r1.h5"]
    stale = temporaries(run)
    assert [p.name.startswith(".r2.h5.") for p in stale] == [True]  # a real half-written file

    capsys.readouterr()
    assert main(["preprocess", str(data), "--out", str(run), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "4 ok (2 already done), 0 failed"
    info = json.loads((run / "run.json").read_text())["stages"]["preprocess"]
    assert {r["record_id"]: r["status"] for r in info["records"]} == {
        "r0": "skipped", "r1": "skipped", "r2": "ok", "r3": "ok"}
    assert temporaries(run) == []
    assert snapshot(run) == snapshot(ref)


def test_channel_map_option(tmp_path, make_edf, capsys):
    make_edf(tmp_path / "in" / "rec.edf", [("Kanal 1", 256), ("Position", 1)], duration=30)
    cmap = tmp_path / "map.yaml"
    cmap.write_text("aliases:\n  Kanal 1: eeg\n")
    run = tmp_path / "run"
    assert main(["preprocess", str(tmp_path / "in"), "--out", str(run), "--quiet"]) == 1
    assert "no channel could be placed" in capsys.readouterr().err
    assert main(["preprocess", str(tmp_path / "in"), "--out", str(run), "--quiet",
                 "--channel-map", str(cmap)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 ok, 0 failed"


def test_config_file_option(tmp_path, make_edf, capsys):
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=30)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("dtype: float32\nclip: 8.0\n")
    run = tmp_path / "run"
    assert main(["preprocess", str(tmp_path / "in"), "--out", str(run), "--quiet",
                 "--config", str(cfg)]) == 0
    import h5py

    with h5py.File(run / "hdf5" / "rec.h5", "r") as f:
        ds = f["rec/BAS/EEG C3-M2"]
        assert ds.dtype == np.float32 and np.abs(ds[()]).max() <= 8.0
    cfg.write_text("dtype: float32\nclipping: 8.0\n")
    assert main(["preprocess", str(tmp_path / "in"), "--out", str(run), "--config", str(cfg)]) == 2
    assert re.search(r"unknown settings \['clipping'\]", capsys.readouterr().err)


def test_missing_out_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["preprocess", str(tmp_path)])
    assert info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_missing_input_folder_is_a_clean_error(tmp_path, capsys):
    try:
        code = main(["preprocess", str(tmp_path / "absent"), "--out", str(tmp_path / "run"),
                     "--quiet"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        message = str(exc.code) if not isinstance(exc.code, int) else capsys.readouterr().err
    else:
        message = capsys.readouterr().err
    assert code != 0
    assert "absent" in message and "not found" in message
