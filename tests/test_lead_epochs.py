"""The OSF leads from the store: which channel fills each lead (stand-ins, conditions), 128 → 64 Hz
epochs that do not depend on how a record is read, ViT-1D pre-training from the store, and
``sleepfm embed`` with an imported OSF backbone."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.signal import welch

from sleepfm import RunDir, embed, finetune, import_osf_weights, load_encoder, preprocess_directory
from sleepfm.channels import OSF_LEADS, osf_lead_slots, osf_lead_substitutes
from sleepfm.cli import main
from sleepfm.lead_data import ArrayEpochs, LeadEpochs, collate_lead_epochs
from sleepfm.lead_epochs import kept_leads, n_epochs, read_lead_epochs, record_leads
from sleepfm.stages.bench_data import lead_arrays
from sleepfm.synthetic import SyntheticConfig, generate_cohort, write_night

OSF_DATA = Path(__file__).parent / "data" / "osf"
TINY = {"width": 16, "depth": 1, "heads": 1, "dim_head": 16, "mlp_dim": 32}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("leads")
    for night in generate_cohort(3, SyntheticConfig(duration_h=0.25, montage="clinical"), seed=2):
        write_night(night, root / "edf")
    preprocess_directory(root / "edf", root / "run", progress=False)
    return RunDir(root / "run")


def test_stand_ins_for_missing_leads():
    names = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental",
             "CPAP pressure"]
    exact = osf_lead_slots(names)
    slots = dict(zip(OSF_LEADS, osf_lead_slots(names, substitute=True)))
    assert exact[OSF_LEADS.index("EEG_C3_A2")] is None
    assert slots["EEG_C3_A2"] == "EEG Fpz-Cz" and slots["EEG_C4_A1"] == "EEG Pz-Oz"
    assert slots["NP"] == "Resp oro-nasal" and slots["EMG_Chin"] == "EMG submental"
    assert "CPAP pressure" not in slots.values()
    assert osf_lead_substitutes(names) == {"NP": "Resp oro-nasal", "EOG_E1_A2": "EOG horizontal",
                                           "EEG_C3_A2": "EEG Fpz-Cz", "EEG_C4_A1": "EEG Pz-Oz"}
    # own names and exact fits win over stand-ins
    assert osf_lead_slots(["C4-M1", "C3-M2", "F3-M2"], substitute=True)[10:] == ("C3-M2", "C4-M1")


def test_layout_and_conditions(run):
    reader = run.store().open(run.store().record_ids[0])
    layout = record_leads(reader)
    assert layout.describe()["EEG_C3_A2"] == "C3-M2" and layout.describe()["SN"] is None
    no_eeg = record_leads(reader, drop_kinds=("eeg",))
    assert not no_eeg.present[[10, 11]].any() and no_eeg.present[:8].sum() == 7
    np.testing.assert_array_equal(kept_leads(("eeg",)) & layout.present, no_eeg.present)


def test_epochs_do_not_depend_on_how_they_are_read(run):
    reader = run.store().open(run.store().record_ids[0])
    layout = record_leads(reader)
    total = n_epochs(reader)
    whole = read_lead_epochs(reader, layout, 0, total)
    assert whole.shape == (total, 12, 1920) and whole.dtype == np.float32
    for k in (0, 5, total - 1):
        np.testing.assert_allclose(read_lead_epochs(reader, layout, k, 1)[0], whole[k], atol=1e-6)
    assert not whole[:, ~layout.present].any()  # empty leads are zeros
    # 128 → 64 Hz keeps the EEG's spectrum below 25 Hz
    raw = reader.read(0, total * 30, channels={"BAS": ["C3-M2"]})["BAS"][0]
    f_in, p_in = welch(raw, fs=128, nperseg=512)
    f_out, p_out = welch(whole[:, 10].reshape(-1), fs=64, nperseg=256)
    band = (f_out > 1) & (f_out < 25)
    np.testing.assert_allclose(p_out[band], np.interp(f_out[band], f_in, p_in), rtol=0.15)
    with pytest.raises(Exception, match="outside"):
        read_lead_epochs(reader, layout, total - 1, 2)


def test_datasets_serve_the_same_epochs(run, tmp_path):
    ids = run.store().record_ids
    readers = [run.store().open(r) for r in ids]
    labels = [np.arange(n_epochs(r)) for r in readers]
    direct = LeadEpochs(readers, [record_leads(r) for r in readers], labels=labels)
    arrays = lead_arrays(run, ids, tmp_path / "epochs")
    cached = ArrayEpochs(ids, [arrays[r][0] for r in ids], [arrays[r][1] for r in ids],
                         labels=labels)
    assert len(direct) == len(cached) == sum(len(y) for y in labels)
    for i in (0, 7, len(direct) - 1):
        a, b = collate_lead_epochs([direct[i]]), collate_lead_epochs([cached[i]])
        np.testing.assert_allclose(a["x"], b["x"], atol=2e-3 * a["x"].abs().max())  # float16
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["y"], b["y"])
    again = lead_arrays(run, ids, tmp_path / "epochs")
    assert all(again[r][2] == arrays[r][2] for r in ids)  # reused, same fingerprint


def test_vit_pretraining_and_embedding_from_the_store(run, tmp_path):
    assert main(["pretrain", "--run", str(run.path), "--encoder", "osf_nano", "--encoder-overrides",
                 "{width: 16, depth: 1, heads: 1, dim_head: 16, mlp_dim: 32}", "--objective",
                 "simclr", "--max-steps", "2", "--batch-size", "8", "--betas", "0.9,0.95",
                 "--quiet"]) == 0
    encoder, record = load_encoder(run.encoder_dir)
    assert record["architecture"] == "ViT1D"
    assert record["metadata"]["training"]["config"]["betas"] == [0.9, 0.95]
    status = embed(run)
    assert set(status.values()) == {"ok"}
    rid = run.store().record_ids[0]
    with h5py.File(run.embedding_file(rid)) as f:
        assert f["epoch/fused"].shape == (n_epochs(run.store().open(rid)), 16)
        assert f["window/fused"].shape[0] == 3 and f["night/fused"].shape == (16,)
        assert "leads" in f.attrs
    with pytest.raises(Exception, match="no 5 s tokens"):
        embed(run, keep_tokens=True, overwrite=True)


def test_embed_with_an_imported_osf_backbone(run):
    import_osf_weights(OSF_DATA / "tiny_lead_wise1.pth", run.encoder_dir)
    status = embed(run)
    assert set(status.values()) == {"updated"}  # another encoder: every record again
    reader = run.store().open(run.store().record_ids[1])
    encoder, _ = load_encoder(run.encoder_dir)
    layout = record_leads(reader)
    x = torch.from_numpy(read_lead_epochs(reader, layout, 2, 1))
    with torch.no_grad():
        cls, _ = encoder.forward_encoding(x, torch.from_numpy(layout.present)[None])
    with h5py.File(run.embedding_file(reader.record_id)) as f:
        np.testing.assert_allclose(f["epoch/fused"][2], cls[0].numpy(), rtol=1e-4, atol=1e-5)
    result = finetune(run, "staging", mode="linear", test_size=0.34, val_size=0.0)
    assert result.info["mode"] == "linear"
