"""End-to-end fine-tuning killed at any moment and run again gives what an uninterrupted run gives
(pre-training's case is in test_pretrain_embed)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sleepfm.artifacts import save_encoder
from sleepfm.models import create_encoder
from sleepfm.rundir import RunDir
from sleepfm.stages.preprocess import preprocess_directory
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_killed_end_to_end_finetuning_resumes_to_the_same_head(tmp_path):
    config = SyntheticConfig(duration_h=10 / 60, montage="staging",
                             sample_rates={"eeg": 100.0, "eog": 100.0, "emg": 100.0})
    for seed in range(6):
        write_night(generate_night(config, seed=seed, record_id=f"P{seed:02d}"), tmp_path / "edf")
    base = RunDir(tmp_path / "base")
    assert not preprocess_directory(tmp_path / "edf", base).failed
    torch.manual_seed(0)
    save_encoder(create_encoder("sleepfm_tiny"), base.encoder_dir)
    runs = {name: RunDir(shutil.copytree(base.path, tmp_path / name)) for name in ("whole", "killed")}
    cmd = [sys.executable, "-m", "sleepfm.cli", "finetune", "staging", "--mode", "finetune",
           "--epochs", "4", "--batch-size", "2", "--hidden", "16"]
    whole = subprocess.run([*cmd, "--run", str(runs["whole"].path)], env=ENV, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.Popen([*cmd, "--run", str(runs["killed"].path)], env=ENV, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = runs["killed"].finetune_checkpoint
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists() and killed.poll() is None, "killed too late: no epoch was left to redo"
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    again = subprocess.run([*cmd, "--run", str(runs["killed"].path)], env=ENV, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    records = [json.loads((run.head_dir("staging") / "config.json").read_text())
               for run in runs.values()]
    nested = [json.loads((run.head_dir("staging") / "encoder" / "config.json").read_text())
              for run in runs.values()]
    assert records[0]["weights_sha256"] == records[1]["weights_sha256"]  # the LSTM head
    assert nested[0]["weights_sha256"] == nested[1]["weights_sha256"]  # the fine-tuned encoder
    assert records[0]["training_curve"] == records[1]["training_curve"]
    assert len(records[0]["training_curve"]) == 4
    assert not runs["killed"].finetune_checkpoint.exists()  # done: nothing left to resume
