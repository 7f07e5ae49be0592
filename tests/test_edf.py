"""sleepfm.io.edf: our EDF/EDF+/BDF reader and writer."""
from __future__ import annotations

from collections import Counter
from datetime import datetime

import numpy as np
import pytest

from conftest import REAL_HYPNOGRAM, REAL_PSG, REAL_SHA256, SHARED_REAL_DIR
from sleepfm.exceptions import DataWarning, EDFError
from sleepfm.io.edf import Annotation, read_edf
from sleepfm.io.edf_write import write_edf
from sleepfm.utils import sha256_file

REAL_CHANNELS = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental",
                 "Temp rectal", "Event marker"]
REAL_RATES = [100.0, 100.0, 100.0, 1.0, 1.0, 1.0, 1.0]


# --- real Sleep-EDF files ----------------------------------------------------------------------

def test_shipped_real_files_are_the_shared_originals():
    if not SHARED_REAL_DIR.is_dir():
        pytest.skip(f"{SHARED_REAL_DIR} is not beside this checkout")
    for name, digest in REAL_SHA256.items():
        assert sha256_file(SHARED_REAL_DIR / name) == digest, name


def test_real_psg_header(real_data):
    rec = read_edf(real_data / REAL_PSG)
    assert rec.channel_names == REAL_CHANNELS
    assert rec.sample_rates == REAL_RATES
    assert rec.duration_s == 300.0
    assert rec.annotations == []
    for name, fs in zip(REAL_CHANNELS, REAL_RATES):
        assert len(rec.get_data(name)) == int(300 * fs)
    assert rec.units[0] == "uV"
    assert repr(rec) == "<Recording SC4001E0-PSG_first300s | 7 ch, 0.08 h, 1–100 Hz>"


def test_real_psg_matches_mne(real_data):
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_edf(real_data / REAL_PSG, preload=True, verbose="error")
    rec = read_edf(real_data / REAL_PSG)
    for name in ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"]:
        ours = rec.get_data(name)
        ref = raw.get_data(picks=[name])[0] * 1e6  # V -> µV
        assert ours.dtype == np.float32
        assert ours.shape == ref.shape == (30000,)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(rec.get_data(name, dtype=np.float64), ref, rtol=0, atol=1e-9)
        assert np.ptp(ref) > 10  # a real signal, not zeros compared with zeros


def test_real_channel_subset_is_lazy_and_exact(real_data):
    full = read_edf(real_data / REAL_PSG)
    sub = read_edf(real_data / REAL_PSG, channels=["EOG horizontal", "Resp oro-nasal"])
    assert sub.channel_names == ["EOG horizontal", "Resp oro-nasal"]
    assert sub.sample_rates == [100.0, 1.0]
    np.testing.assert_array_equal(sub.get_data("Resp oro-nasal"), full.get_data("Resp oro-nasal"))
    np.testing.assert_array_equal(sub.get_data("EOG horizontal"), full.get_data("EOG horizontal"))
    with pytest.raises(KeyError, match="EEG Fpz-Cz"):
        sub.get_data("EEG Fpz-Cz")
    with pytest.raises(KeyError, match="C3-M2"):
        read_edf(real_data / REAL_PSG, channels=["C3-M2"])


def test_real_hypnogram_annotations(real_data):
    hyp = read_edf(real_data / REAL_HYPNOGRAM)
    assert hyp.channel_names == []
    anns = hyp.annotations
    assert len(anns) == 154
    assert anns[0] == Annotation(0.0, 30630.0, "Sleep stage W")
    assert anns[-1] == Annotation(79500.0, 6900.0, "Sleep stage ?")
    epochs = Counter()
    for a in anns:
        assert a.duration % 30 == 0
        epochs[a.description] += int(a.duration // 30)
    assert dict(epochs) == {"Sleep stage W": 1997, "Sleep stage 1": 58, "Sleep stage 2": 250,
                            "Sleep stage 3": 101, "Sleep stage 4": 119, "Sleep stage R": 125,
                            "Sleep stage ?": 230}
    # Annotations tile the night without gaps or overlaps.
    for a, b in zip(anns, anns[1:]):
        assert a.onset + a.duration == b.onset


# --- synthetic round trips ---------------------------------------------------------------------

MIXED = [("EEG C3-M2", 256), ("Airflow", 32), ("SpO2", 1)]


@pytest.mark.parametrize("fmt, bits", [("edf", 16), ("bdf", 24)])
def test_round_trip_mixed_rates(tmp_path, make_edf, fmt, bits):
    path, data = make_edf(tmp_path / f"rec.{fmt}", MIXED, duration=20, fmt=fmt,
                          units=["uV", "L/s", "%"])
    rec = read_edf(path)
    assert rec.record_id == "rec"
    assert rec.channel_names == [n for n, _ in MIXED]
    assert rec.sample_rates == [256.0, 32.0, 1.0]
    assert rec.units == ["uV", "L/s", "%"]
    assert rec.duration_s == 20.0
    for name, fs in MIXED:
        x = data[name]
        y = rec.get_data(name, dtype=np.float64)
        assert y.shape == (int(20 * fs),)
        step = np.ptp(x) * (1 + 1e-3) / (2 ** bits - 1)  # header text may widen the range a little
        err = np.max(np.abs(y - x))
        assert err <= 0.5 * step + 1e-12, (name, err, step)
        # float32 (the default) adds only float32 rounding on top.
        np.testing.assert_allclose(rec.get_data(name), x, rtol=2e-7, atol=0.5 * step + 1e-6)


def test_bdf_is_more_precise_than_edf(tmp_path, make_edf):
    edf, data = make_edf(tmp_path / "a.edf", MIXED, duration=10, seed=3)
    bdf, _ = make_edf(tmp_path / "a.bdf", MIXED, duration=10, seed=3, fmt="bdf")
    x = data["EEG C3-M2"]
    e16 = np.abs(read_edf(edf).get_data("EEG C3-M2", dtype=np.float64) - x).max()
    e24 = np.abs(read_edf(bdf).get_data("EEG C3-M2", dtype=np.float64) - x).max()
    assert e24 < e16 / 100


def test_negative_values_and_extremes_survive(tmp_path):
    fs = 10
    x = np.concatenate([np.linspace(-3000, 3000, 50), np.full(50, -3000.0)])
    y = np.linspace(0.001, 0.002, 100)
    path = write_edf(tmp_path / "x.edf", [x, y], [fs, fs], ["A", "B"], fmt="bdf")
    rec = read_edf(path)
    np.testing.assert_allclose(rec.get_data("A", dtype=np.float64), x, atol=6000 / 2 ** 23)
    np.testing.assert_allclose(rec.get_data("B", dtype=np.float64), y, atol=1e-6 / 2 ** 10)


ANNOTATIONS = [
    Annotation(0.0, 30.0, "Sleep stage W"),
    Annotation(30.0, 30.0, "Sleep stage 1"),
    Annotation(60.0, 60.0, "Sleep stage 2"),
    Annotation(12.5, 10.25, "Obstructive Apnea"),
    Annotation(47.0, 3.5, "Arousal"),
    Annotation(47.0, 0.0, "Lights on"),
    Annotation(99.75, 15.0, "Désaturation"),  # non-ASCII text is UTF-8 in EDF+
]


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_annotations_round_trip_exactly(tmp_path, make_edf, fmt):
    path, data = make_edf(tmp_path / f"plus.{fmt}", MIXED, duration=120, fmt=fmt,
                          annotations=ANNOTATIONS)
    rec = read_edf(path)
    assert rec._header.variant == ("EDF+C" if fmt == "edf" else "BDF+C")
    key = lambda a: (a.onset, a.description)  # noqa: E731
    assert sorted(rec.annotations, key=key) == sorted(ANNOTATIONS, key=key)
    # The annotation signal is not a data channel, and data channels are still right.
    assert rec.channel_names == [n for n, _ in MIXED]
    np.testing.assert_allclose(rec.get_data("SpO2", dtype=np.float64), data["SpO2"],
                               atol=np.ptp(data["SpO2"]) / 2 ** 15)


def test_start_time_kept_date_dropped(tmp_path, make_edf):
    path, _ = make_edf(tmp_path / "r.edf", MIXED, duration=10, start=datetime(1999, 3, 4, 23, 5, 7))
    rec = read_edf(path)
    assert rec.start_time == "23:05:07"
    assert "1999" not in repr(vars(rec)) and "04.03.99" not in repr(vars(rec))


def test_psg_suffix_removed_from_record_id(tmp_path, make_edf):
    path, _ = make_edf(tmp_path / "SC4002E0-PSG.edf", MIXED, duration=10)
    assert read_edf(path).record_id == "SC4002E0"


def test_write_rejects_bad_input_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        write_edf(tmp_path / "nan.edf", [np.array([0.0, np.nan])], [2], ["A"])
    with pytest.raises(ValueError, match="whole number"):
        write_edf(tmp_path / "odd.edf", [np.zeros(10)], [2.5], ["A"])
    with pytest.raises(ValueError, match="same whole number"):
        write_edf(tmp_path / "len.edf", [np.zeros(10), np.zeros(4)], [10, 2], ["A", "B"])
    with pytest.raises(ValueError, match="fmt"):
        write_edf(tmp_path / "fmt.edf", [np.zeros(10)], [10], ["A"], fmt="gdf")
    assert list(tmp_path.iterdir()) == []


# --- damaged files: EDFError naming the file and the reason -------------------------------------

@pytest.fixture
def good(tmp_path, make_edf):
    path, data = make_edf(tmp_path / "rec.edf", MIXED, duration=20)
    return path


NS = len(MIXED)
RECORD_BYTES = 2 * (256 + 32 + 1)
HEADER = 256 * (NS + 1)


def test_truncated_data_raises_with_remedy(good, edf_damage):
    edf_damage.cut(good, HEADER + 7 * RECORD_BYTES + RECORD_BYTES // 2)
    with pytest.raises(EDFError) as info:
        read_edf(good)
    msg = str(info.value)
    assert "rec.edf" in msg and "truncated" in msg
    assert "20 data records" in msg and "7.50" in msg
    assert "--allow-truncated" in msg and "on_truncated='warn'" in msg


def test_truncated_data_warn_uses_complete_records(good, edf_damage):
    full = read_edf(good).get_data("EEG C3-M2")
    edf_damage.cut(good, HEADER + 7 * RECORD_BYTES + RECORD_BYTES // 2)
    with pytest.warns(DataWarning, match=r"rec\.edf.*truncated; using 7"):
        rec = read_edf(good, on_truncated="warn")
    assert rec.duration_s == 7.0
    np.testing.assert_array_equal(rec.get_data("EEG C3-M2"), full[:7 * 256])
    assert len(rec.get_data("SpO2")) == 7


def test_unknown_record_count_is_inferred(good, edf_damage):
    edf_damage.patch(good, edf_damage.HDR_N_RECORDS, "-1", 8)
    with pytest.warns(DataWarning, match="inferring 20"):
        rec = read_edf(good)
    assert rec.duration_s == 20.0


def test_on_truncated_option_checked(good):
    with pytest.raises(ValueError, match="on_truncated.*'raise', 'warn'.*'ignore'"):
        read_edf(good, on_truncated="ignore")


@pytest.mark.parametrize("n_bytes, match", [(0, "shorter than an EDF header"),
                                            (100, "shorter than an EDF header"),
                                            (256 + 300, "signal header is cut short")])
def test_header_cut_short(good, edf_damage, n_bytes, match):
    edf_damage.cut(good, n_bytes)
    with pytest.raises(EDFError, match=match) as info:
        read_edf(good)
    assert "rec.edf" in str(info.value)


@pytest.mark.parametrize("field, text, match", [
    ("HDR_N_RECORDS", "abc", "number of data records"),
    ("HDR_RECORD_DURATION", "one", "record duration"),
    ("HDR_N_SIGNALS", "x", "number of signals"),
    ("HDR_BYTES", "1000", "do not agree"),
    ("HDR_N_SIGNALS", "2", "do not agree"),
])
def test_corrupt_fixed_header(good, edf_damage, field, text, match):
    width = 4 if field == "HDR_N_SIGNALS" else 8
    edf_damage.patch(good, getattr(edf_damage, field), text, width)
    with pytest.raises(EDFError, match=match) as info:
        read_edf(good)
    assert "rec.edf" in str(info.value)


@pytest.mark.parametrize("column, text, match", [
    ("SIG_SPR", "2x6", "samples per record"),
    ("SIG_SPR", "-5", "negative samples-per-record"),
    ("SIG_PMIN", "low", "physical minimum"),
    ("SIG_PMAX", "1e999x", "physical maximum"),
])
def test_corrupt_signal_header(good, edf_damage, column, text, match):
    col = getattr(edf_damage, column)
    edf_damage.patch(good, edf_damage.signal_offset(NS, col, 0), text, col[1])
    with pytest.raises(EDFError, match=match) as info:
        read_edf(good)
    assert "rec.edf" in str(info.value)


def test_equal_physical_min_max_is_corrupt(good, edf_damage):
    edf_damage.patch(good, edf_damage.signal_offset(NS, edf_damage.SIG_PMIN, 1), "5", 8)
    edf_damage.patch(good, edf_damage.signal_offset(NS, edf_damage.SIG_PMAX, 1), "5", 8)
    with pytest.raises(EDFError, match=r"\['Airflow'\].*equal minimum and maximum"):
        read_edf(good)


def test_not_an_edf(tmp_path):
    p = tmp_path / "notes.edf"
    p.write_text("Patient notes, not a recording.\n" * 20)
    with pytest.raises(EDFError, match=r"notes\.edf: does not start with an EDF"):
        read_edf(p)


def test_zero_data_records(good, edf_damage):
    edf_damage.patch(good, edf_damage.HDR_N_RECORDS, "0", 8)
    with pytest.raises(EDFError, match=r"rec\.edf: holds no data records"):
        read_edf(good)
    edf_damage.cut(good, HEADER)
    with pytest.raises(EDFError, match="no data records"):
        read_edf(good)


def test_edf_plus_d_rejected(tmp_path, make_edf, edf_damage):
    path, _ = make_edf(tmp_path / "d.edf", MIXED, duration=10, annotations=[(1.0, 0.0, "x")])
    edf_damage.patch(path, edf_damage.HDR_RESERVED, "EDF+D", 44)
    with pytest.raises(EDFError, match=r"d\.edf: discontinuous EDF\+D.*EDF\+C"):
        read_edf(path)


def test_duplicate_channel_labels(good, edf_damage):
    edf_damage.patch(good, edf_damage.signal_offset(NS, edf_damage.SIG_LABEL, 1), "EEG C3-M2", 16)
    with pytest.raises(EDFError, match=r"\['EEG C3-M2'\] occur more than once"):
        read_edf(good)


def test_missing_file(tmp_path):
    with pytest.raises(EDFError, match="no such file"):
        read_edf(tmp_path / "absent.edf")



@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_large_file_decoded_across_read_blocks(tmp_path, make_edf, fmt):
    # > 8 MB of data records: the reader streams the file in several blocks; samples and
    # annotations on both sides of a block boundary must come back unchanged.
    chans = [("EEG C3-M2", 512), ("EMG chin", 512), ("SpO2", 1)]
    anns = [Annotation(10.0, 5.0, "Arousal"), Annotation(4093.0, 2.0, "Hypopnea"),
            Annotation(4399.5, 30.0, "Obstructive Apnea")]
    path, data = make_edf(tmp_path / f"big.{fmt}", chans, duration=4500, fmt=fmt, annotations=anns)
    assert path.stat().st_size > 9_000_000
    rec = read_edf(path)
    assert rec.annotations == anns
    bits = 16 if fmt == "edf" else 24
    for name, _ in chans:
        x = data[name]
        y = rec.get_data(name, dtype=np.float64)
        assert y.shape == x.shape
        step = np.ptp(x) * (1 + 1e-3) / (2 ** bits - 1)
        assert np.max(np.abs(y - x)) <= 0.5 * step + 1e-12, name
