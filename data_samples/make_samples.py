"""Regenerate the synthetic recordings of data_samples/ (deterministic).

    python data_samples/make_samples.py

Four 40-minute synthetic nights with different montages (one without ECG, one as BDF without
respiration) so the demo exercises channel-agnostic encoding. The real Sleep-EDF excerpt beside them
is copied, not generated (see README.md).
"""
from pathlib import Path

from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

HERE = Path(__file__).resolve().parent
RATES = {"eeg": 100.0, "eog": 100.0, "emg": 100.0, "ecg": 100.0, "resp": 16.0, "spo2": 1.0}
MONTAGES = {
    "SYN0001": (["C4-M1", "E1-M2", "Chin", "ECG", "Airflow", "Thorax", "SpO2"], "edf"),
    "SYN0002": (["C3-M2", "C4-M1", "E1-M2", "Chin", "Airflow", "SpO2"], "edf"),
    "SYN0003": (["C4-M1", "E1-M2", "E2-M1", "Chin", "ECG"], "bdf"),
    "SYN0004": (["C4-M1", "E1-M2", "Chin", "ECG", "Airflow", "Thorax", "SpO2"], "edf"),
}


def main() -> None:
    for seed, (record_id, (channels, fmt)) in enumerate(MONTAGES.items(), start=1):
        night = generate_night(SyntheticConfig(duration_h=40 / 60, sample_rates=RATES, artefact_rate=2.0),
                               seed=seed, record_id=record_id)
        for name in list(night.signals):
            if name not in channels:
                for table in (night.signals, night.sample_rates, night.units, night.kinds):
                    table.pop(name)
        paths = write_night(night, HERE, fmt=fmt)
        print(record_id, {k: p.name for k, p in paths.items()})


if __name__ == "__main__":
    main()
