"""How realistic are the synthetic nights? Stage them with YASA's shipped model (trained on real PSG).

YASA's published real-data level is about 0.87 accuracy and κ 0.82. Synthetic nights on which it
falls far below that would lack the cues real scorers use; this prints, per night and pooled,
YASA's accuracy and Cohen's κ against the generator's stages, per-stage F1 and the confusion matrix.

    python benchmarks/synthetic_realism.py [--nights 20] [--hours 8] [--artefacts 0] [--severity S]
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd

from sleepfm.eval.metrics import accuracy, cohen_kappa, confusion_matrix, per_class_f1
from sleepfm.vocab import STAGE_NAMES
from sleepfm.synthetic import SyntheticConfig, generate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artefacts", type=float, default=0.0, help="artefact bursts per hour")
    parser.add_argument("--severity", default=None, help="none, mild, moderate or severe apnea")
    args = parser.parse_args()

    import yasa

    logging.getLogger("yasa").setLevel(logging.ERROR)
    config = SyntheticConfig(duration_h=args.hours, montage="staging", artefact_rate=args.artefacts,
                             severity=args.severity)
    truths, preds, rows = [], [], []
    for night in generate_cohort(args.nights, config, seed=args.seed):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            staging = yasa.SleepStaging(night.to_mne(["C4-M1", "E1-M2", "Chin"]), eeg_name="C4-M1",
                                        eog_name="E1-M2", emg_name="Chin",
                                        metadata={"age": night.subject["age"],
                                                  "male": night.subject["sex"] == "M"})
            pred = staging.predict().as_int().to_numpy().astype(int)
        truth = night.stages.astype(int)
        truths.append(truth)
        preds.append(pred)
        rows.append({"record": night.record_id, "accuracy": accuracy(truth, pred),
                     "kappa": cohen_kappa(truth, pred), "seconds": time.perf_counter() - t})
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    y, p = np.concatenate(truths), np.concatenate(preds)
    print(f"\npooled over {args.nights} synthetic nights: accuracy {accuracy(y, p):.3f}, "
          f"kappa {cohen_kappa(y, p):.3f} (YASA on real PSG: about 0.87 / 0.82)")
    print("per-stage F1:", {s: round(float(f), 3) for s, f in zip(STAGE_NAMES, per_class_f1(y, p))})
    print(pd.DataFrame(confusion_matrix(y, p), index=[f"true {s}" for s in STAGE_NAMES],
                       columns=[f"pred {s}" for s in STAGE_NAMES]))


if __name__ == "__main__":
    main()
