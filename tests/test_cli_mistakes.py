"""Ordinary user mistakes through the real command line: each exits non-zero with one line that
names the problem and the remedy, printed once, and never a Python traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL_CHANNELS
from sleepfm.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with one recording, a run preprocessed from it (no encoder yet), and a run
    preprocessed at 100 Hz."""
    from conftest import _make_edf

    root = tmp_path_factory.mktemp("mistakes")
    _make_edf(root / "in" / "rec.edf", SMALL_CHANNELS, duration=60)
    assert main(["preprocess", str(root / "in"), "--out", str(root / "run"), "--quiet"]) == 0
    (root / "hundred.yaml").write_text("sample_rate: 100\n")
    assert main(["preprocess", str(root / "in"), "--out", str(root / "run100"), "--quiet",
                 "--config", str(root / "hundred.yaml")]) == 0
    return root


def _yaml(world, name: str, text: str) -> str:
    path = world / name
    path.write_text(text)
    return str(path)


def _mistakes(world):
    """``(what, argv, expected words of the message)``; argv may hold {w} for the folder."""
    run, inp = str(world / "run"), str(world / "in")
    file = world / "a_file.txt"
    file.write_text("not a directory")
    return [
        ("unknown objective in YAML", ["pretrain", "--run", run, "--config",
                                       _yaml(world, "obj.yaml", "objective: nope\nencoder: sleepfm_tiny\n")],
         ["Unknown objective 'nope'", "loo_contrastive"]),
        ("wrong type in YAML", ["pretrain", "--run", run, "--config",
                                _yaml(world, "type.yaml", "batch_size: big\n")],
         ["type.yaml", "batch_size must be an integer, got 'big'"]),
        ("invalid YAML", ["pretrain", "--run", run, "--config",
                          _yaml(world, "bad.yaml", "batch_size: [1, 2\n")],
         ["bad.yaml", "not valid YAML"]),
        ("YAML that is not settings", ["preprocess", inp, "--out", run, "--config",
                                       _yaml(world, "list.yaml", "- 1\n- 2\n")],
         ["list.yaml", "expected 'name: value' settings"]),
        ("missing config file", ["embed", "--run", run, "--config", str(world / "absent.yaml")],
         ["absent.yaml", "config file not found"]),
        ("unknown setting", ["evaluate", "staging", "--run", run, "--config",
                             _yaml(world, "unknown.yaml", "n_bootstrap: 5\n")],
         ["unknown settings ['n_bootstrap']", "n_boot"]),
        ("value not allowed", ["preprocess", inp, "--out", run, "--config",
                               _yaml(world, "dtype.yaml", "dtype: float64\n")],
         ["dtype", "Allowed values are 'float16', 'float32'"]),
        ("value below its minimum", ["embed", "--run", run, "--batch-size", "0"],
         ["batch_size must be at least 1"]),
        ("unknown encoder in demo", ["demo", "--data", inp, "--run", str(world / "demo"),
                                     "--encoder", "nope"],
         ["Unknown encoder 'nope'", "sleepfm_tiny"]),
        ("unknown encoder in pretrain", ["pretrain", "--run", run, "--encoder", "nope"],
         ["Unknown encoder 'nope'"]),
        ("settings Lightning rejects", ["pretrain", "--run", run, "--encoder", "sleepfm_tiny",
                                        "--precision", "15"],
         ["trainer settings are not usable"]),
        ("missing input folder", ["preprocess", str(world / "nowhere"), "--out", run],
         ["nowhere", "input folder not found"]),
        ("output is a file", ["preprocess", inp, "--out", str(file)],
         ["a_file.txt is a file", "directory"]),
        ("output under a file", ["preprocess", inp, "--out", str(file / "run")],
         ["a_file.txt", "writable"]),
        ("missing channel map", ["preprocess", inp, "--out", run, "--channel-map",
                                 str(world / "map.yaml")],
         ["map.yaml", "channel map not found"]),
        ("pretrain before preprocess", ["pretrain", "--run", str(world / "empty")],
         ["no HDF5 store", "sleepfm preprocess"]),
        ("embed before pretrain", ["embed", "--run", run],
         ["no encoder", "sleepfm pretrain --run"]),
        ("finetune on embeddings before embed", ["finetune", "staging", "--run", run,
                                                 "--features", "embedding"],
         ["no embeddings", "sleepfm embed --run"]),
        ("finetune without labels", ["finetune", "staging", "--run", run],
         ["rec: has a store record but no stage label file", "--skip-unlabelled"]),
        ("unknown head candidate", ["finetune", "staging", "--run", run, "--candidates",
                                    "linear,forest"],
         ["candidates", "'forest'", "'mlp'"]),
        ("evaluate before finetune", ["evaluate", "events", "--run", run],
         ["no trained head", "sleepfm finetune events"]),
        ("predict before finetune", ["predict", str(world / "in" / "rec.edf"), "--run", run,
                                     "--out", str(world / "hyp.csv")],
         ["no trained head", "sleepfm finetune staging"]),
        ("predict a missing recording", ["predict", str(world / "none.edf"), "--run", run,
                                         "--out", str(world / "hyp.csv")],
         ["none.edf", "not found"]),
        ("few-shot without shots", ["finetune", "staging", "--run", run, "--mode", "fewshot"],
         ["--shots"]),
        ("store at another rate", ["pretrain", "--run", str(world / "run100"), "--encoder",
                                   "sleepfm_tiny"],
         ["preprocessed at 100 Hz", "expects 128 Hz", "sample_rate: 128"]),
    ]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_each_mistake_is_one_clean_line(world, capsys):
    assert len(_mistakes(world)) >= 15
    for what, argv, words in _mistakes(world):
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0, what
        lines = _error_lines(err)
        assert len(lines) == 1, (what, err)
        assert "Traceback" not in err, (what, err)
        for word in words:
            assert word in lines[0], (what, word, lines[0])
        message = lines[0][len("error: "):]
        assert err.count(message[:60]) == 1, (what, "printed more than once", err)
    assert not (world / "demo" / "hdf5").exists()  # the unknown encoder failed before any work


def test_wrong_type_on_the_command_line_is_a_usage_error(world, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["embed", "--run", str(world / "run"), "--batch-size", "big"])
    assert exc.value.code == 2
    assert "batch_size must be an integer, got 'big'" in capsys.readouterr().err


def test_mistakes_in_a_fresh_interpreter_print_no_traceback(world):
    """The real executable, as a user runs it (YAML errors, an unknown name, stages out of
    order)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    chosen = [m for m in _mistakes(world) if m[0] in (
        "invalid YAML", "unknown encoder in demo", "embed before pretrain", "output is a file")]
    for what, argv, words in chosen:
        proc = subprocess.run([sys.executable, "-m", "sleepfm.cli", *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (what, proc.stderr)
        assert "Traceback" not in proc.stderr, (what, proc.stderr)
        assert len(_error_lines(proc.stderr)) == 1 and words[0] in proc.stderr, (what, proc.stderr)


class _Payload:
    """A pickle that would run code when unpickled."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content", ["garbage", "pickle"])
def test_tampered_last_ckpt_is_refused_without_unpickling(world, tmp_path, capsys, content):
    import pickle
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    last = run / "checkpoints" / "lightning" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"not a checkpoint" if content == "garbage" else pickle.dumps(_Payload()))
    assert main(["pretrain", "--run", str(run), "--encoder", "sleepfm_tiny", "--quiet"]) == 2
    captured = capsys.readouterr()
    (line,) = _error_lines(captured.err)
    assert str(last) in line and "--restart" in line and "weights_only" not in captured.err
    assert "pwned" not in captured.out + captured.err


def test_corrupt_encoder_is_one_line(world, tmp_path, capsys):
    from sleepfm.artifacts import save_encoder
    from sleepfm.models import create_encoder

    encoder = save_encoder(create_encoder("sleepfm_tiny"), tmp_path / "encoder")
    (encoder / "config.json").write_text("{broken")
    assert main(["embed", "--run", str(world / "run"), "--checkpoint", str(encoder)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "config.json is not valid JSON" in line and "save it again" in line


def test_more_settings_mistakes(world, capsys):
    run = str(world / "run")
    cases = [
        (["pretrain", "--run", run, "--encoder", "sleepfm_tiny", "--objective-kwargs",
          "{temperature: -1}"], "temperature must be > 0"),
        (["pretrain", "--run", run, "--encoder", "sleepfm_tiny", "--objective-kwargs",
          "{warmth: 1}"], "objective 'loo_contrastive': invalid options {'warmth': 1}"),
        (["pretrain", "--run", run, "--encoder", "sleepfm_tiny", "--encoder-overrides",
          "{embed_dim: 30}"], "embed_dim"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        (line,) = _error_lines(capsys.readouterr().err)
        assert words in line, (argv, line)
