"""sleepfm.io.edf: our EDF/EDF+/BDF reader and writer."""
from __future__ import annotations

import importlib.util
import warnings
from collections import Counter
from datetime import datetime
from pathlib import Path

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
    # Repeated labels were an EDFError; they are now made unique with a DataWarning, so a file is
    # never lost because of its labels (see test_repeated_labels_made_unique below).
    airflow = read_edf(good).get_data("Airflow")
    edf_damage.patch(good, edf_damage.signal_offset(NS, edf_damage.SIG_LABEL, 1), "EEG C3-M2", 16)
    with pytest.warns(DataWarning, match=r"rec\.edf: the label 'EEG C3-M2' occurs more than once; "
                                         r"signal 2 is read as 'EEG C3-M2 \(2\)'"):
        rec = read_edf(good)
    assert rec.channel_names == ["EEG C3-M2", "EEG C3-M2 (2)", "SpO2"]
    np.testing.assert_array_equal(rec.get_data("EEG C3-M2 (2)"), airflow)


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



# --- pyedflib's test files: the same labels, rates, samples and annotations ---------------------

def _pyedflib_data() -> Path | None:
    spec = importlib.util.find_spec("pyedflib")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "tests" / "data"


PYEDFLIB_DATA = _pyedflib_data()
PYEDFLIB_FILES = (sorted(p.name for p in PYEDFLIB_DATA.iterdir() if p.suffix.lower() in (".edf", ".bdf"))
                  if PYEDFLIB_DATA is not None and PYEDFLIB_DATA.is_dir() else [])
# test_legacy.edf is plain EDF (no EDF+C in the header) whose last signal is labelled
# "EDF Annotations": pyedflib reads that signal as data and finds no annotations; we parse its two
# TALs. Annotations are compared where both readers have them.
ONLY_WE_READ = {"test_legacy.edf": [Annotation(0.0, 0.0, "Recording starts"),
                                    Annotation(600.0, 0.0, "Recording ends")]}


def test_pyedflib_ships_the_files_we_compare():
    if PYEDFLIB_DATA is None:
        pytest.skip("pyedflib is not installed")
    assert {"test_generator.edf", "test_generator.bdf", "test_subsecond.edf", "test_utf8.edf",
            "test_legacy.edf"} <= set(PYEDFLIB_FILES)


@pytest.mark.parametrize("name", PYEDFLIB_FILES or [
    pytest.param("-", marks=pytest.mark.skip(reason="pyedflib (and its test files) not installed"))])
def test_matches_pyedflib(name):
    pyedflib = pytest.importorskip("pyedflib")
    path = PYEDFLIB_DATA / name
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # these files are clean: nothing to repair
        rec = read_edf(path)
    ref = pyedflib.EdfReader(str(path))
    try:
        picks = [i for i, lab in enumerate(ref.getSignalLabels())
                 if lab.strip() not in ("EDF Annotations", "BDF Annotations")]
        assert rec.channel_names == [ref.getSignalLabels()[i] for i in picks]
        assert rec.sample_rates == [ref.getSampleFrequency(i) for i in picks]
        assert rec.duration_s == pytest.approx(ref.getFileDuration())
        for name_, i in zip(rec.channel_names, picks):
            theirs = ref.readSignal(i)  # physical units, float64
            ours = rec.get_data(name_, dtype=np.float64)
            assert ours.shape == theirs.shape, name_
            scale = max(float(np.max(np.abs(theirs))), 1.0)
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * scale, err_msg=name_)
            # float32 (the default) differs by float32 rounding only.
            np.testing.assert_allclose(rec.get_data(name_), theirs, rtol=1e-6, atol=1e-6 * scale)
        onsets, durations, texts = ref.readAnnotations()
    finally:
        ref.close()
    theirs = [Annotation(float(o), 0.0 if d < 0 else float(d), str(t))  # pyedflib: -1 = no duration
              for o, d, t in zip(onsets, durations, texts)]
    if name in ONLY_WE_READ:
        assert theirs == []
        assert rec.annotations == ONLY_WE_READ[name]
        return
    assert [a.description for a in rec.annotations] == [a.description for a in theirs]
    np.testing.assert_allclose([a.onset for a in rec.annotations], [a.onset for a in theirs],
                               rtol=0, atol=1e-6)
    assert [a.duration for a in rec.annotations] == [a.duration for a in theirs]


@pytest.mark.parametrize("name, onset, offset", [("test_subsecond.edf", 1.9511719, 0.3945312),
                                                 ("test_utf8.edf", 1.5566407, 0.3945312)])
def test_annotation_onsets_count_from_the_first_sample(name, onset, offset):
    # The first record starts 0.3945312 s after the header's start second ("+0.3945312\x14\x14");
    # onsets as written (2.3457031, 1.9511719) count from the header's start second.
    if PYEDFLIB_DATA is None:
        pytest.skip("pyedflib (and its test files) not installed")
    rec = read_edf(PYEDFLIB_DATA / name)
    assert rec.start_offset_s == offset
    first = rec.annotations[0]
    assert first == Annotation(onset, 0.0, "XLSpike")  # pyedflib and MNE agree


def _rewrite_annotation_records(path: Path, n_signals: int, make_block) -> None:
    """Overwrite the annotation signal (the last one) of every data record with
    ``make_block(record)`` bytes, zero-padded; the layout is read from the header text."""
    raw = bytearray(path.read_bytes())
    spr = [int(raw[256 + 216 * n_signals + 8 * k: 256 + 216 * n_signals + 8 * (k + 1)])
           for k in range(n_signals)]
    n_records = int(raw[236:244])
    record_bytes = 2 * sum(spr)
    start = 256 * (n_signals + 1)
    ann_at, ann_len = 2 * sum(spr[:-1]), 2 * spr[-1]
    for r in range(n_records):
        blob = make_block(r)
        assert len(blob) <= ann_len
        at = start + r * record_bytes + ann_at
        raw[at:at + ann_len] = blob.ljust(ann_len, b"\x00")
    path.write_bytes(bytes(raw))


def test_first_record_starting_late_shifts_annotations(tmp_path, make_edf):
    # An EDF+ whose first sample is 0.3945312 s after the header's start time: every record's
    # time-keeping TAL and every annotation onset is written 0.3945312 s later than the data's own
    # clock. The onsets we return count from the first sample; durations are untouched.
    offset = "0.3945312"
    anns = [Annotation(0.0, 30.0, "Sleep stage W"), Annotation(12.5, 10.25, "Obstructive Apnea"),
            Annotation(19.75, 0.0, "Arousal")]
    path, data = make_edf(tmp_path / "late.edf", MIXED, duration=20,
                          annotations=[(0.0, 0.0, "x" * 80)])  # reserves room for our TALs

    def block(r: int) -> bytes:
        out = f"+{r}.{offset[2:]}\x14\x14\x00"  # time-keeping: record r starts at r + offset
        for a in anns:
            if int(a.onset) == r:
                out += f"+{a.onset + float(offset):.7f}\x15{a.duration:g}\x14{a.description}\x14\x00"
        return out.encode()

    _rewrite_annotation_records(path, len(MIXED) + 1, block)
    rec = read_edf(path)
    assert rec.start_offset_s == float(offset)
    assert rec.annotations == anns  # exact: the offset is subtracted in decimal
    for name, _ in MIXED:  # rewriting the annotation signal left the data alone
        np.testing.assert_allclose(rec.get_data(name, dtype=np.float64), data[name],
                                   atol=np.ptp(data[name]) / 2 ** 15, err_msg=name)
    assert rec.duration_s == 20.0
    pyedflib = pytest.importorskip("pyedflib")
    ref = pyedflib.EdfReader(str(path))
    try:
        onsets, durations, texts = ref.readAnnotations()
    finally:
        ref.close()
    assert list(texts) == [a.description for a in anns]
    np.testing.assert_allclose(onsets, [a.onset for a in anns], atol=1e-6)
    np.testing.assert_allclose(np.maximum(durations, 0), [a.duration for a in anns], atol=1e-6)


def test_record_starting_on_the_second_leaves_onsets(tmp_path, make_edf):
    path, _ = make_edf(tmp_path / "plus.edf", MIXED, duration=10, annotations=[(2.5, 1.0, "Arousal")])
    rec = read_edf(path)
    assert rec.start_offset_s == 0.0
    assert rec.annotations == [Annotation(2.5, 1.0, "Arousal")]


# --- samples per record checked against the file size ------------------------------------------

@pytest.fixture(params=["edf", "bdf"])
def good_any(request, tmp_path, make_edf):
    fmt = request.param
    path, _ = make_edf(tmp_path / f"rec.{fmt}", MIXED, duration=20, fmt=fmt)
    return path, 2 if fmt == "edf" else 3


def _set_spr(path, k: int, value: str, edf_damage) -> None:
    edf_damage.patch(path, edf_damage.signal_offset(NS, edf_damage.SIG_SPR, k), value, 8)


@pytest.mark.parametrize("value", ["40", "16", "33"])
@pytest.mark.parametrize("on_truncated", ["raise", "warn"])
def test_wrong_samples_per_record_is_an_error_not_a_misread(good_any, edf_damage, value, on_truncated):
    # Airflow really has 32 samples per record: with 40, 16 or 33 in its header the file would look
    # truncated (or a little long) and every signal after the first would be read from the wrong
    # bytes. The data part is exactly 20 records of 289 samples, so the reader says so.
    path, width = good_any
    _set_spr(path, 1, value, edf_damage)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # no "using N records" on the way
        with pytest.raises(EDFError) as info:
            read_edf(path, on_truncated=on_truncated)
    msg = str(info.value)
    per_record = 256 + int(value) + 1
    assert msg.startswith(f"{path.name}: the header's samples per record (256, {value}, 1) add up "
                          f"to {per_record} samples ({per_record * width} bytes) per record")
    assert f"exactly 20 records of 289 samples ({289 * width} bytes)" in msg
    assert "samples-per-record field is wrong" in msg and "header editor" in msg


@pytest.mark.parametrize("on_truncated", ["raise", "warn"])
def test_no_record_fits_the_file(good_any, edf_damage, on_truncated):
    path, width = good_any
    _set_spr(path, 2, "99999", edf_damage)  # SpO2: 1 sample per record really
    with pytest.raises(EDFError) as info:
        read_edf(path, on_truncated=on_truncated)
    msg = str(info.value)
    assert msg.startswith(path.name + ": ")
    assert f"{(256 + 32 + 99999) * width} bytes) per record" in msg
    assert f"only {20 * 289 * width} bytes of data, not one whole record" in msg
    assert "samples-per-record fields are corrupt or the file is cut short" in msg


def test_data_longer_than_promised_by_part_of_a_record(good, edf_damage):
    with open(good, "ab") as f:
        f.write(b"\x00" * 100)
    with pytest.raises(EDFError) as info:
        read_edf(good, on_truncated="warn")
    msg = str(info.value)
    assert msg.startswith("rec.edf: header says 20 data records of 578 bytes (11560 bytes)")
    assert "holds 11660 bytes of data, 100 more, which is not a whole number of records" in msg
    assert "cannot be located" in msg


def test_data_longer_than_promised_by_whole_records(good):
    full = read_edf(good).get_data("EEG C3-M2")
    raw = good.read_bytes()
    good.write_bytes(raw + raw[-2 * RECORD_BYTES:])
    with pytest.warns(DataWarning, match=r"rec\.edf: header says 20 data records, file holds 22; "
                                         r"using the 20 the header counts \(the last 2 are ignored\)"):
        rec = read_edf(good)
    assert rec.duration_s == 20.0
    np.testing.assert_array_equal(rec.get_data("EEG C3-M2"), full)


def test_truncated_at_a_record_boundary_is_truncation(good, edf_damage):
    # 10 of 20 records: the data part is 20 "records" of 289 bytes too, but a cut at a record
    # boundary is a truncation (and 289 bytes is not whole 16-bit samples anyway).
    full = read_edf(good).get_data("SpO2")
    edf_damage.cut(good, HEADER + 10 * RECORD_BYTES)
    with pytest.raises(EDFError, match=r"header says 20 data records, file holds 10\.00; the file is "
                                       r"truncated\. Pass on_truncated='warn' \(CLI: --allow-truncated\)"):
        read_edf(good)
    with pytest.warns(DataWarning, match="truncated; using 10"):
        rec = read_edf(good, on_truncated="warn")
    np.testing.assert_array_equal(rec.get_data("SpO2"), full[:10])


def test_all_samples_per_record_zero(good, edf_damage):
    for k in range(NS):
        _set_spr(good, k, "0", edf_damage)
    with pytest.raises(EDFError, match=r"rec\.edf: every signal has 0 samples per record.*11560 bytes"):
        read_edf(good)


def test_negative_record_count_other_than_minus_one(good, edf_damage):
    edf_damage.patch(good, edf_damage.HDR_N_RECORDS, "-5", 8)
    with pytest.raises(EDFError, match=r"rec\.edf: header field 'number of data records' is -5; it "
                                       r"must be a record count or -1"):
        read_edf(good)


def test_unknown_record_count_with_partial_record(good, edf_damage):
    edf_damage.patch(good, edf_damage.HDR_N_RECORDS, "-1", 8)
    edf_damage.cut(good, HEADER + 12 * RECORD_BYTES + 100)
    with pytest.warns(DataWarning, match=r"inferring 12 from the file size \(ignoring the last 100 "
                                         r"bytes, less than one record\)"):
        rec = read_edf(good)
    assert rec.duration_s == 12.0


def test_zero_records_with_data_says_so(good, edf_damage):
    edf_damage.patch(good, edf_damage.HDR_N_RECORDS, "0", 8)
    with pytest.raises(EDFError, match=r"rec\.edf: holds no data records according to its header, "
                                       r"although 11560 bytes of data follow it"):
        read_edf(good)


# --- record duration --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "0", "0.0"])
def test_bad_record_duration(good, edf_damage, text):
    edf_damage.patch(good, edf_damage.HDR_RECORD_DURATION, text, 8)
    with pytest.raises(EDFError) as info:
        read_edf(good)
    msg = str(info.value)
    assert msg.startswith(f"rec.edf: header field 'record duration' is {text!r}")
    assert "header editor" in msg
    if float(text) == 0:
        assert "['EEG C3-M2', 'Airflow', 'SpO2'] have samples in every record" in msg
    else:
        assert "not a positive, finite number of seconds" in msg


def test_zero_record_duration_allowed_for_annotations_only(real_data):
    # The Sleep-EDF hypnogram holds only an annotation signal, with 0 s records (EDF+ allows it).
    hyp = read_edf(real_data / REAL_HYPNOGRAM)
    assert hyp._header.record_duration == 0 and len(hyp.annotations) == 154


@pytest.mark.parametrize("column, text", [("SIG_PMIN", "-inf"), ("SIG_PMAX", "nan"),
                                          ("SIG_PMAX", "1e999")])
def test_non_finite_scaling(good, edf_damage, column, text):
    col = getattr(edf_damage, column)
    edf_damage.patch(good, edf_damage.signal_offset(NS, col, 1), text, col[1])
    with pytest.raises(EDFError, match=r"rec\.edf: channels \['Airflow'\] have a physical or digital "
                                       r"minimum or maximum that is not finite"):
        read_edf(good)


# --- channel labels: repaired, never fatal ------------------------------------------------------

def _set_label(path, k: int, text: str, edf_damage, ns: int = NS) -> None:
    edf_damage.patch(path, edf_damage.signal_offset(ns, edf_damage.SIG_LABEL, k), text, 16)


def test_nul_byte_in_label_removed(good, edf_damage):
    eeg = read_edf(good).get_data("EEG C3-M2")
    _set_label(good, 0, "EEG\x00C3-M2", edf_damage)
    with pytest.warns(DataWarning, match=r"rec\.edf: the label of signal 1 \('EEG\\x00C3-M2'\) holds "
                                         r"unprintable characters; renamed to 'EEGC3-M2'"):
        rec = read_edf(good)
    assert rec.channel_names == ["EEGC3-M2", "Airflow", "SpO2"]
    np.testing.assert_array_equal(rec.get_data("EEGC3-M2"), eeg)
    with pytest.warns(DataWarning, match="renamed to 'EEGC3-M2'"):
        assert read_edf(good, channels=["EEGC3-M2"]).channel_names == ["EEGC3-M2"]


def test_nul_padded_and_control_characters(good, edf_damage):
    _set_label(good, 1, "Airflow\x00\x00\x00\x00\x00\x00\x00\x00\x00", edf_damage)
    _set_label(good, 2, "Sp\x07O2\t\x1b", edf_damage)
    with pytest.warns(DataWarning) as caught:
        rec = read_edf(good)
    assert rec.channel_names == ["EEG C3-M2", "Airflow", "SpO2"]
    messages = [str(w.message) for w in caught]
    assert any("signal 2" in m and "renamed to 'Airflow'" in m for m in messages)
    assert any("signal 3" in m and "renamed to 'SpO2'" in m for m in messages)


def test_empty_labels_get_a_name(good, edf_damage):
    _set_label(good, 1, "", edf_damage)
    _set_label(good, 2, "\x00\x01\x02", edf_damage)
    with pytest.warns(DataWarning) as caught:
        rec = read_edf(good)
    assert rec.channel_names == ["EEG C3-M2", "channel 2", "channel 3"]
    messages = [str(w.message) for w in caught]
    assert "rec.edf: the label of signal 2 is empty; naming it 'channel 2'." in messages
    assert ("rec.edf: the label of signal 3 ('\\x00\\x01\\x02') holds only unprintable characters; "
            "naming it 'channel 3'.") in messages
    assert rec.sample_rates == [256.0, 32.0, 1.0]


def test_repeated_labels_made_unique(tmp_path, make_edf, edf_damage):
    chans = [("EEG", 64), ("EEG", 64), ("EEG (2)", 64), ("EEG", 64), ("channel 5", 1), ("", 1)]
    path, _ = make_edf(tmp_path / "dup.edf", [(f"S{k}", fs) for k, (_, fs) in enumerate(chans)],
                       duration=5, annotations=[(1.0, 0.0, "Lights off")])
    ns = len(chans) + 1  # and the annotation signal
    signals = read_edf(path)
    for k, (label, _) in enumerate(chans):
        _set_label(path, k, label, edf_damage, ns)
    with pytest.warns(DataWarning) as caught:
        rec = read_edf(path)
    # The first "EEG" keeps its name; "EEG (2)" exists, so the later ones are (3) and (4);
    # the empty sixth label becomes "channel 6" (and "channel 5" is someone else's).
    assert rec.channel_names == ["EEG", "EEG (3)", "EEG (2)", "EEG (4)", "channel 5", "channel 6"]
    assert len(set(rec.channel_names)) == len(chans)
    for k, name in enumerate(rec.channel_names):
        np.testing.assert_array_equal(rec.get_data(name), signals.get_data(f"S{k}"), err_msg=name)
    assert rec.annotations == [Annotation(1.0, 0.0, "Lights off")]
    messages = [str(w.message) for w in caught]
    assert "dup.edf: the label 'EEG' occurs more than once; signal 2 is read as 'EEG (3)'." in messages
    assert "dup.edf: the label 'EEG' occurs more than once; signal 4 is read as 'EEG (4)'." in messages
