"""Shared fixtures: small synthetic EDFs written with ``write_edf``, the real Sleep-EDF files, and
helpers that snapshot an HDF5 store so two runs can be compared byte for byte."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from sleepfm.io.edf_write import write_edf
from sleepfm.utils import sha256_file

ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = ROOT / "data_samples"
# The shared originals (../shared/data/real/sleep-edf), when this checkout has them beside it.
SHARED_REAL_DIR = ROOT.parent / "shared" / "data" / "real" / "sleep-edf"
REAL_PSG = "SC4001E0-PSG_first300s.edf"
REAL_HYPNOGRAM = "SC4001EC-Hypnogram.edf"
# SHA-256 of the real Sleep-EDF files as shipped in data_samples/ (see its README).
REAL_SHA256 = {
    REAL_PSG: "ff05447a6a4df29979b119d0643fd655a9c1641e8955f1fa020b4103295cd4ba",
    REAL_HYPNOGRAM: "a4cf67694ade1b52a0ddd06d5817fd45d2d3e8bac5302f640f3e9cfbbf12a996",
}

# A small PSG montage covering every modality, at the mixed rates real files have.
DEFAULT_CHANNELS: list[tuple[str, float]] = [
    ("EEG C3-M2", 256),
    ("EOG E1-M2", 256),
    ("EMG chin", 256),
    ("ECG", 256),
    ("Airflow", 32),
    ("SpO2", 1),
]


def synthetic_signal(name: str, fs: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """A plausible signal for a channel: a few sines plus noise (EEG-like), or a slow SpO2 trace."""
    t = np.arange(int(round(fs * duration))) / fs
    if "spo2" in name.lower():
        return 95.0 + np.sin(2 * np.pi * t / 40.0) + 0.2 * rng.standard_normal(len(t))
    nyq = fs / 2
    x = 20 * rng.standard_normal(len(t))
    for f, a in ((1.5, 40.0), (6.0, 15.0), (11.0, 10.0)):
        if f < nyq:
            x += a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return x


def _make_edf(path, channels=None, *, duration: float = 60.0, seed: int = 0, signals=None, **kwargs):
    """Write a small EDF/BDF with ``write_edf``; returns ``(path, {name: signal})``.

    ``channels`` is a list of ``(name, rate)``; ``signals`` may give some channels' data explicitly.
    Other keyword arguments go to ``write_edf`` (``fmt``, ``annotations``, ``patient_id``, ``start``…).
    """
    channels = list(channels if channels is not None else DEFAULT_CHANNELS)
    rng = np.random.default_rng(seed)
    data = {}
    for name, fs in channels:
        if signals is not None and name in signals:
            data[name] = np.asarray(signals[name], dtype=np.float64)
        else:
            data[name] = synthetic_signal(name, fs, duration, rng)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_edf(path, [data[n] for n, _ in channels], [fs for _, fs in channels],
              [n for n, _ in channels], **kwargs)
    return path, data


@pytest.fixture
def make_edf():
    """Factory: ``make_edf(path, [(name, rate), ...], duration=60, seed=0, **write_edf_kwargs)``."""
    return _make_edf


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """A folder holding only the real Sleep-EDF excerpt and its hypnogram, copied from
    ``data_samples/`` after checking they are the files its README names (so every clone runs
    the real-data tests)."""
    folder = tmp_path_factory.mktemp("sleep-edf")
    for name, digest in REAL_SHA256.items():
        assert sha256_file(SAMPLES_DIR / name) == digest, f"data_samples/{name} was modified"
        shutil.copy(SAMPLES_DIR / name, folder / name)
    return folder


#: ``sleepfm demo`` on data_samples/ with a small generated cohort (the demo's whole path, fast).
DEMO_ARGS = ("--encoder", "sleepfm_tiny", "--epochs", "1", "--max-steps", "5", "--subjects", "40",
             "--minutes", "10", "--n-boot", "100", "--quiet", "--no-dashboard")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A run made by the ``sleepfm demo`` command on ``data_samples/``, and what it printed; shared
    by the demo and dashboard tests (which only read it)."""
    run = tmp_path_factory.mktemp("demo") / "run"
    done = subprocess.run([sys.executable, "-m", "sleepfm.cli", "demo", "--data", str(SAMPLES_DIR),
                           "--run", str(run), *DEMO_ARGS], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done


def _attrs(obj) -> dict:
    out = {}
    for k, v in obj.attrs.items():
        if isinstance(v, np.ndarray):
            v = (v.dtype.str, v.tobytes())
        elif isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def h5_snapshot(path) -> dict:
    """Every group/dataset of an HDF5 file: attributes, dtype, shape and raw bytes.

    External links (``index.h5``) are recorded as their targets, not followed.
    """
    snap: dict = {}
    with h5py.File(path, "r") as f:
        snap["/"] = ("group", _attrs(f))

        def visit(name, link):
            if isinstance(link, h5py.ExternalLink):
                snap[name] = ("external", link.filename, link.path)
                return None
            obj = f[name]
            if isinstance(obj, h5py.Dataset):
                snap[name] = ("dataset", obj.dtype.str, obj.shape, obj[()].tobytes(), _attrs(obj))
            else:
                snap[name] = ("group", _attrs(obj))
            return None

        f.visititems_links(visit)
    return snap


def run_snapshot(run_dir) -> dict:
    """All outputs of a run directory except ``run.json`` (which holds times and the command):
    HDF5 files as :func:`h5_snapshot`, other files as bytes."""
    run_dir = Path(run_dir)
    out = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file() or p.name == "run.json":
            continue
        rel = p.relative_to(run_dir).as_posix()
        out[rel] = h5_snapshot(p) if p.suffix == ".h5" else p.read_bytes()
    return out


@pytest.fixture
def snapshot():
    """``snapshot(run_dir)``: comparable content of a run directory (see :func:`run_snapshot`)."""
    return run_snapshot


@pytest.fixture
def h5snap():
    """``h5snap(path)``: comparable content of one HDF5 file (see :func:`h5_snapshot`)."""
    return h5_snapshot


def leftover_temporaries(run_dir) -> list[Path]:
    """Temporary files (``.name.XXXX.tmp``) anywhere under a run directory."""
    return sorted(p for p in Path(run_dir).rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture
def temporaries():
    return leftover_temporaries


# --- damaging files on purpose -------------------------------------------------------------------

# Byte offsets of the fixed header fields (EDF spec).
HDR_VERSION, HDR_PATIENT, HDR_RECORDING = 0, 8, 88
HDR_BYTES, HDR_RESERVED, HDR_N_RECORDS, HDR_RECORD_DURATION, HDR_N_SIGNALS = 184, 192, 236, 244, 252
# Per-signal header columns: (offset per signal in units of ns, width).
SIG_LABEL, SIG_PMIN, SIG_PMAX, SIG_SPR = (0, 16), (104, 8), (112, 8), (216, 8)


def patch_header(path, offset: int, text: str, width: int) -> None:
    """Overwrite one header field with ``text`` (space-padded to ``width`` bytes)."""
    raw = bytearray(Path(path).read_bytes())
    field = text.encode("latin-1")[:width].ljust(width, b" ")
    raw[offset:offset + width] = field
    Path(path).write_bytes(bytes(raw))


def signal_field_offset(n_signals: int, column: tuple[int, int], k: int) -> int:
    """Offset of signal ``k``'s entry in a per-signal header column."""
    start, width = column
    return 256 + start * n_signals + k * width


def cut_file(path, n_bytes: int) -> None:
    """Keep only the first ``n_bytes`` bytes of a file."""
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[:n_bytes])


@pytest.fixture
def edf_damage():
    """Namespace of the damaging helpers above."""
    import types

    return types.SimpleNamespace(patch=patch_header, signal_offset=signal_field_offset, cut=cut_file,
                                 SIG_LABEL=SIG_LABEL, SIG_PMIN=SIG_PMIN, SIG_PMAX=SIG_PMAX,
                                 SIG_SPR=SIG_SPR, HDR_BYTES=HDR_BYTES, HDR_RESERVED=HDR_RESERVED,
                                 HDR_N_RECORDS=HDR_N_RECORDS, HDR_N_SIGNALS=HDR_N_SIGNALS,
                                 HDR_RECORD_DURATION=HDR_RECORD_DURATION)


# A folder with good and bad recordings, used by the batch tests (library and CLI).
SMALL_CHANNELS = [("EEG C3-M2", 256), ("EOG E1-M2", 256), ("Airflow", 32), ("SpO2", 1)]


def build_bad_batch(folder, *, duration: float = 30.0) -> dict[str, str]:
    """Write good and damaged EDFs into ``folder``.

    Returns ``{file name: expected substring of its failure reason}``; good files map to ``""``.
    """
    folder = Path(folder)
    expect: dict[str, str] = {}

    _make_edf(folder / "good1.edf", SMALL_CHANNELS, duration=duration, seed=1)
    expect["good1.edf"] = ""
    _make_edf(folder / "good2.bdf", SMALL_CHANNELS, duration=duration, seed=2, fmt="bdf")
    expect["good2.bdf"] = ""

    # Data cut in the middle of a data record.
    p, _ = _make_edf(folder / "truncated.edf", SMALL_CHANNELS, duration=duration, seed=3)
    ns = len(SMALL_CHANNELS)
    record_bytes = 2 * sum(int(fs) for _, fs in SMALL_CHANNELS)
    cut_file(p, 256 * (ns + 1) + 10 * record_bytes + record_bytes // 2)
    expect["truncated.edf"] = "truncated"

    # Header cut short (inside the per-signal header).
    p, _ = _make_edf(folder / "header_cut.edf", SMALL_CHANNELS, duration=duration, seed=4)
    cut_file(p, 256 + 100)
    expect["header_cut.edf"] = "cut short"

    # A number field that is not a number.
    p, _ = _make_edf(folder / "corrupt_header.edf", SMALL_CHANNELS, duration=duration, seed=5)
    patch_header(p, HDR_N_RECORDS, "abc", 8)
    expect["corrupt_header.edf"] = "not a number"

    # A text file with an .edf name.
    (folder / "notes.edf").write_text("This is not an EDF file, just some notes.\n" * 20)
    expect["notes.edf"] = "not an EDF"

    # Zero data records.
    p, _ = _make_edf(folder / "empty.edf", SMALL_CHANNELS, duration=duration, seed=6)
    patch_header(p, HDR_N_RECORDS, "0", 8)
    cut_file(p, 256 * (ns + 1))
    expect["empty.edf"] = "no data records"

    # Only channels the map cannot place.
    _make_edf(folder / "unknown_channels.edf", [("Position", 1), ("Light", 1), ("DC1", 32)],
              duration=duration, seed=7)
    expect["unknown_channels.edf"] = "no channel could be placed"

    # Every channel flat.
    n = int(duration * 256)
    _make_edf(folder / "all_flat.edf", [("EEG C3-M2", 256), ("EOG E1-M2", 256)], duration=duration,
              signals={"EEG C3-M2": np.zeros(n), "EOG E1-M2": np.full(n, 3.0)})
    expect["all_flat.edf"] = "no usable channel"

    # Discontinuous EDF+D.
    p, _ = _make_edf(folder / "discontinuous.edf", SMALL_CHANNELS, duration=duration, seed=8,
                     annotations=[(0.0, 0.0, "Lights off")])
    patch_header(p, HDR_RESERVED, "EDF+D", 44)
    expect["discontinuous.edf"] = "EDF+D"
    return expect


# --------------------------------------------------------------------------------------------------
# SleepFM's release format, written from this project's implementations
# --------------------------------------------------------------------------------------------------
def reference_encoder_payload(model) -> dict:
    """A ``SleepFMReference``'s weights as the reference's pretrain.py saves ``best.pt``
    (DataParallel names, its table of positions, training state beside the weights)."""
    from sleepfm.models.sleepfm_reference import reference_names, sinusoidal_positions

    state = model.state_dict()
    ref = {f"module.{theirs}": state[ours] for theirs, ours in reference_names(model).items()}
    ref["module.positional_encoding.pe"] = sinusoidal_positions(128, model.embed_dim)[None]
    return {"epoch": 2, "temperature": 0.1, "best_loss": 1.0, "loss": 1.0, "state_dict": ref}


def write_sleepfm_clinical(root, *, n_phenotypes: int = 3, seed: int = 0) -> dict:
    """Write a release laid out as zou-group/sleepfm-clinical's ``sleepfm/`` folder (checkpoints,
    configs) with random weights; returns the models ``{"encoder", "staging", "diagnosis"}``."""
    import json

    import torch

    from sleepfm.models.heads.reference import (
        ReferenceDiagnosisConfig,
        ReferenceDiagnosisNet,
        ReferenceStagingNet,
    )
    from sleepfm.models.sleepfm_reference import SleepFMReference

    torch.manual_seed(seed)
    encoder = SleepFMReference().eval()
    staging = ReferenceStagingNet().eval()
    names = {f"{i}.0": f"phenotype {i}" for i in range(n_phenotypes)}
    diagnosis = ReferenceDiagnosisNet(ReferenceDiagnosisConfig(num_classes=n_phenotypes),
                                      phenotypes=names).eval()
    with torch.no_grad():
        for net in (staging, diagnosis):
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    ckpt = Path(root) / "checkpoints"
    encoder_config = {"model": "SetTransformer", "in_channels": 1, "embed_dim": 128,
                      "num_heads": 8, "num_layers": 6, "pooling_head": 8, "dropout": 0.3,
                      "sampling_freq": 128, "patch_size": 640,
                      "modality_types": ["BAS", "RESP", "EKG", "EMG"]}
    for folder, model, config, file, payload in (
            ("model_base", "SetTransformer", encoder_config, "best.pt",
             reference_encoder_payload(encoder)),
            ("model_sleep_staging", "SleepEventLSTMClassifier",
             {"model_params": staging.config.to_dict()}, "best.pth",
             {f"module.{k}": v for k, v in staging.reference_state_dict().items()}),
            ("model_diagnosis", "DiagnosisFinetuneFullLSTMCOXPHWithDemo",
             {"model_params": diagnosis.config.to_dict()}, "best.pth",
             {f"module.{k}": v for k, v in diagnosis.reference_state_dict().items()})):
        (ckpt / folder).mkdir(parents=True)
        (ckpt / folder / "config.json").write_text(json.dumps({**config, "model": model}))
        torch.save(payload, ckpt / folder / file)
    configs = Path(root) / "configs"
    configs.mkdir()
    (configs / "channel_groups.json").write_text(json.dumps(
        {"BAS": ["C3-M2", "F3:M1+M2", "E1 (LEOG)"], "RESP": ["RIP Thorax", "Airflow"],
         "EKG": ["ECG", "EKG II"], "EMG": ["Chin1-Chin2", "Pleth"]}))
    rows = [f"{i},{code},{name}" for i, (code, name) in enumerate(names.items())]
    (configs / "label_mapping.csv").write_text("label_idx,phecode,phenotype\n"
                                               + "\n".join(rows) + "\n")
    return {"encoder": encoder, "staging": staging, "diagnosis": diagnosis}
