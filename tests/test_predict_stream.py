"""Streaming ``sleepfm predict``: the stages of the store path (preprocess → HDF5 → embed → head)
for every kind of staging head, read from the EDF in memory; a folder staged with its bad files
reported; no Lightning imported; nothing of the EDF header's identity in what is written.

"The same" is measured against the run's own store records and embeddings, on ``data_samples/``
and a synthetic 11-minute night (its last 5-minute window end-aligned): the stage of every epoch
is identical and the probabilities agree to 1e-5 (float32 rounding; they differ by ~1e-7)."""
import shutil
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest
import torch

from sleepfm.artifacts import load_heads, save_encoder
from sleepfm.channels import MODALITIES
from sleepfm.cli import main
from sleepfm.config import FinetuneConfig
from sleepfm.exceptions import InvalidParameterError
from sleepfm.io.embeddings import read_embeddings
from sleepfm.io.labels import read_stages
from sleepfm.models import create_encoder
from sleepfm.models.heads import WindowStagingNet
from sleepfm.rundir import RunDir
from sleepfm.stages.embed import embed
from sleepfm.stages.features import record_spectral_features
from sleepfm.stages.finetune import finetune
from sleepfm.stages.inference import head_features, head_outputs, predict_store, spectral_kinds
from sleepfm.stages.preprocess import channel_map_of, find_recordings, preprocess_directory
from sleepfm.stages.staging_model import StagingModel, run_preprocess_config
from sleepfm.stages.stream import StreamedRecord
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night
from sleepfm.vocab import SCHEMES, record_id
from sleepfm.windows import fuse_tokens, summarise_tokens

from conftest import SAMPLES_DIR

torch.set_num_threads(1)
# The heads are trained for one epoch on purpose: what is tested is how they are fed.
pytestmark = pytest.mark.filterwarnings("ignore::sleepfm.exceptions.ConvergenceWarning")

HEADS = {
    "lstm-embedding": {"mode": "lstm", "features": "embedding"},
    "linear-both": {"mode": "linear", "features": "both"},
    "mlp-spectral": {"mode": "mlp", "features": "spectral"},
}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """``data_samples/`` and a synthetic 11-minute night, preprocessed and embedded with a
    randomly initialised tiny encoder, with an LSTM staging head; ``(run, {record_id: EDF})``."""
    root = tmp_path_factory.mktemp("stream")
    inputs = root / "in"
    shutil.copytree(SAMPLES_DIR, inputs)
    night = generate_night(SyntheticConfig(
        duration_h=11 / 60, montage="cohort",
        sample_rates={"eeg": 100.0, "eog": 100.0, "emg": 100.0, "ecg": 100.0, "resp": 16.0}),
        seed=3, record_id="SHORT")
    write_night(night, inputs)
    run = root / "run"
    assert not preprocess_directory(inputs, run).failed
    torch.manual_seed(0)
    save_encoder(create_encoder("sleepfm_tiny"), run / "checkpoints" / "encoder")
    embed(run)
    finetune(run, "staging", FinetuneConfig(epochs=1, hidden=8, **HEADS["lstm-embedding"]))
    return run, {record_id(p): p for p in find_recordings(inputs)}


def _store_proba(run, rid: str) -> np.ndarray:
    """What the store path gives: the head on the run's own embeddings / store record."""
    run = RunDir(run)
    heads, record = load_heads(run.head_dir("staging"))
    parts = []
    if head_features(record) != "spectral":
        parts.append(read_embeddings(run.embedding_file(rid), name=record["embedding"]))
    kinds = spectral_kinds(record)
    if kinds:
        parts.append(record_spectral_features(run.store().open(rid), kinds,
                                              n_epochs=len(parts[0]) if parts else None))
    return head_outputs(heads, record, X=[np.hstack(parts)])["proba"][0]


def _assert_same(proba: np.ndarray, ref: np.ndarray) -> None:
    assert proba.shape == ref.shape
    np.testing.assert_array_equal(proba.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(proba, ref, rtol=0, atol=1e-5)


def test_streamed_record_holds_what_the_store_holds(sample_run):
    run, edfs = sample_run
    config = run_preprocess_config(RunDir(run))
    for rid in ("SHORT", "SYN0003"):  # an EDF+ with every modality, a BDF without respiration
        record = StreamedRecord(edfs[rid], config, channel_map_of(config))
        record.load(MODALITIES)
        stored = RunDir(run).store().open(rid)
        assert record.channels == stored.channels and record.n_samples == stored.n_samples
        ours, theirs = record.read(0.0, None), stored.read(0.0, None)
        for mod in stored.channels:  # bit for bit: quantised to the store's float16 as stored
            np.testing.assert_array_equal(ours[mod], theirs[mod])
        record.release(["BAS"])
        assert "BAS" not in record.channels and "BAS" in record.placed


@pytest.mark.parametrize("settings", list(HEADS.values()), ids=list(HEADS))
def test_streaming_gives_the_stages_of_the_store_path(sample_run, settings):
    run, edfs = sample_run
    finetune(run, "staging", FinetuneConfig(epochs=1, hidden=8, **settings))
    model = StagingModel.from_run(run)
    assert model.embedding == (None if settings["features"] == "spectral" else "fused")
    assert bool(model.spectral_kinds) == (settings["features"] != "embedding")
    for rid, edf in edfs.items():
        _assert_same(model.predict_proba(edf), _store_proba(run, rid))


def test_an_end_to_end_network_streams_as_it_reads_the_store(sample_run):
    run, edfs = sample_run
    torch.manual_seed(1)
    net = WindowStagingNet(create_encoder("sleepfm_tiny"), hidden=8).eval()
    config = run_preprocess_config(RunDir(run))
    model = StagingModel(net, SCHEMES["aasm5"], embedding=None, preprocess=config,
                         channel_map=channel_map_of(config))
    assert model.end_to_end
    for rid in ("SHORT", "SYN0001"):
        _assert_same(model.predict_proba(edfs[rid]),
                     predict_store(net, RunDir(run).store(), [rid])[0])


def test_a_vit_run_streams_the_stages_of_its_store_path(sample_run, tmp_path):
    """A run whose encoder is a ViT-1D (OSF): its epochs of the 12 leads, streamed, give the
    stages its store and embeddings give (``sample_run``'s recordings, preprocessed again)."""
    run, edfs = sample_run
    vit = tmp_path / "vit"
    assert not preprocess_directory(edfs["SHORT"].parent, vit).failed
    torch.manual_seed(0)
    save_encoder(create_encoder("osf_nano", width=32, depth=1, heads=2, dim_head=16, mlp_dim=64),
                 vit / "checkpoints" / "encoder")
    embed(vit)
    finetune(vit, "staging", FinetuneConfig(epochs=1, mode="linear", features="embedding"))
    model = StagingModel.from_run(vit)
    assert model.lead_epochs and model.embedding == "fused"
    for rid, edf in edfs.items():
        _assert_same(model.predict_proba(edf), _store_proba(vit, rid))
    with pytest.raises(InvalidParameterError, match="fused epoch embeddings only"):
        StagingModel(model.head, model.classes, encoder=model.encoder, embedding="BAS")


class _TokenHead:
    """A head on a night's tokens (as the published SleepFM staging net takes them): here the
    fused epoch embeddings fed to a fitted epoch head."""

    def __init__(self, head):
        self.head, self.seen = head, []

    def predict_proba(self, tokens):
        self.seen = sorted(tokens)
        return self.head.predict_proba([summarise_tokens(fuse_tokens(tokens))["epoch"]])[0]


def test_a_head_on_tokens_gets_every_modality_of_the_night(sample_run):
    run, edfs = sample_run
    finetune(run, "staging", FinetuneConfig(epochs=1, hidden=8, **HEADS["lstm-embedding"]))
    model = StagingModel.from_run(run)
    head = _TokenHead(model.head)
    on_tokens = StagingModel(head, model.classes, encoder=model.encoder, embedding="tokens",
                             preprocess=model.preprocess, channel_map=model.channel_map)
    for rid, present in (("SHORT", MODALITIES), ("SYN0002", ("BAS", "EMG", "RESP"))):
        _assert_same(on_tokens.predict_proba(edfs[rid]), _store_proba(run, rid))
        assert head.seen == sorted(present)


def test_a_model_whose_parts_do_not_fit_is_refused(sample_run):
    run, _ = sample_run
    model = StagingModel.from_run(run)
    with pytest.raises(InvalidParameterError, match="values per epoch"):
        StagingModel(model.head, model.classes, encoder=create_encoder("sleepfm_tiny",
                                                                       embed_dim=16,
                                                                       conv_channels=(8, 8, 16,
                                                                                      16, 16, 16)))
    with pytest.raises(InvalidParameterError, match="give the encoder"):
        StagingModel(model.head, model.classes)


def test_folder_mode_stages_each_file_and_reports_the_bad_ones(sample_run, tmp_path, capsys):
    run, edfs = sample_run
    folder = tmp_path / "nights"
    (folder / "site").mkdir(parents=True)
    shutil.copy(edfs["SYN0001"], folder / "SYN0001.edf")
    shutil.copy(edfs["SYN0003"], folder / "site" / "SYN0003.bdf")
    (folder / "garbage.edf").write_bytes(b"this is not a recording\n" * 40)
    (folder / "cut.edf").write_bytes(edfs["SYN0002"].read_bytes()[:3000])
    out = tmp_path / "hypnograms"
    assert main(["predict", str(folder), "--run", str(run), "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert f"2 staged, 2 failed → {out}" in captured.out
    assert "garbage.edf" in captured.err and "cut.edf" in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["SYN0001.csv", "SYN0003.csv"]
    for name in ("SYN0001", "SYN0003"):
        written = read_stages(out / f"{name}.csv")
        assert len(written) == 80
    # All good: exit 0, and a progress bar unless --quiet.
    shutil.rmtree(folder / "site")
    (folder / "garbage.edf").unlink()
    (folder / "cut.edf").unlink()
    assert main(["predict", str(folder), "--run", str(run), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 staged, 0 failed" in captured.out and "predict" in captured.err


def test_predict_imports_no_lightning(sample_run, tmp_path):
    run, edfs = sample_run
    code = "\n".join([
        "import sys",
        "from sleepfm.cli import main",
        f"assert main(['predict', {str(edfs['SYN0004'])!r}, '--run', {str(run)!r}, "
        f"'--out', {str(tmp_path / 'one.csv')!r}]) == 0",
        f"assert main(['predict', {str(SAMPLES_DIR)!r}, '--run', {str(run)!r}, "
        f"'--out', {str(tmp_path / 'all')!r}, '--quiet']) == 0",
        "loaded = [m for m in ('lightning', 'pytorch_lightning') if m in sys.modules]",
        "assert not loaded, f'imported {loaded}'",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "one.csv").is_file() and len(list((tmp_path / "all").glob("*.csv"))) == 5


def test_no_patient_identity_reaches_the_outputs(sample_run, tmp_path, make_edf, capsys):
    run, _ = sample_run
    edf, _ = make_edf(tmp_path / "in" / "night.edf", [("EEG C3-M2", 100), ("EOG E1-M2", 100),
                                                     ("EMG chin", 100), ("ECG", 100)],
                      duration=600, patient_id="PAT123 M 01-JAN-1970 John_Doe",
                      start=datetime(2001, 2, 3, 23, 45, 6))
    assert main(["predict", str(edf), "--run", str(run), "--out", str(tmp_path / "one.csv")]) == 0
    assert main(["predict", str(tmp_path / "in"), "--run", str(run), "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    texts = [(tmp_path / "one.csv").read_text(), (tmp_path / "out" / "night.csv").read_text(),
             captured.out, captured.err]
    for secret in ("PAT123", "John", "Doe", "JAN-1970", "03.02.01", "2001"):
        assert not any(secret in text for text in texts), secret
