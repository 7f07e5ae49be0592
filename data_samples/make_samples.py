"""Regenerate the synthetic recordings of data_samples/ (deterministic).

    python data_samples/make_samples.py

Four 40-minute excerpts of synthetic nights, cut at different times after lights-off so that
together they hold every stage, with different montages (one without ECG, one as BDF without
respiration) so the demo exercises channel-agnostic encoding. The real Sleep-EDF excerpt beside them
is copied, not generated (see README.md).
"""
from pathlib import Path

from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

HERE = Path(__file__).resolve().parent
RATES = {"eeg": 100.0, "eog": 100.0, "emg": 100.0, "ecg": 100.0, "resp": 16.0, "spo2": 1.0}
MINUTES = 40
# record id: (channels, format, minutes after lights-off where the excerpt starts)
RECORDS = {
    "SYN0001": (["C4-M1", "E1-M2", "Chin", "ECG", "Airflow", "Thorax", "SpO2"], "edf", 10),
    "SYN0002": (["C3-M2", "C4-M1", "E1-M2", "Chin", "Airflow", "SpO2"], "edf", 60),
    "SYN0003": (["C4-M1", "E1-M2", "E2-M1", "Chin", "ECG"], "bdf", 150),
    "SYN0004": (["C4-M1", "E1-M2", "Chin", "ECG", "Airflow", "Thorax", "SpO2"], "edf", 240),
}


def main() -> None:
    for seed, (record_id, (channels, fmt, start_min)) in enumerate(RECORDS.items(), start=1):
        config = SyntheticConfig(duration_h=(start_min + MINUTES) / 60, montage="clinical",
                                 sample_rates=RATES, artefact_rate=2.0)
        night = generate_night(config, seed=seed, record_id=record_id).pick(channels)
        night = night.crop(start_min * 60, (start_min + MINUTES) * 60)
        paths = write_night(night, HERE, fmt=fmt)
        print(record_id, {k: p.name for k, p in paths.items()})


if __name__ == "__main__":
    main()
