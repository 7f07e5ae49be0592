"""A hypnogram: stages per 30 s epoch with the label scheme they are coded in, and its CSV."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import LabelError
from ..utils import check_option, write_text_atomic
from ..vocab import EPOCH_S, SCHEMES


@dataclass
class Hypnogram:
    """Stages per 30 s epoch, aligned to the recording start, with the scheme they are coded in.

    Parameters
    ----------
    stages : array-like of int
        One class per epoch in ``scheme`` (AASM 0–4 for ``aasm5``), -1 unscored.
    scheme : {"aasm5", "osf4"}, default="aasm5"
        The label scheme (:data:`sleepfm.vocab.SCHEMES`).
    epoch_s : float, default=30.0
    """

    stages: np.ndarray
    scheme: str = "aasm5"
    epoch_s: float = EPOCH_S

    def __post_init__(self):
        check_option("scheme", self.scheme, SCHEMES)
        self.stages = np.asarray(self.stages, dtype=np.int8)
        bad = (self.stages < -1) | (self.stages >= len(self.classes))
        if np.any(bad):
            raise LabelError(f"stage {self.stages[bad][0]} is outside -1..{len(self.classes) - 1} "
                             f"of the {self.scheme} scheme {list(self.classes)}.")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the scheme, in code order."""
        return SCHEMES[self.scheme]

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        n_unique = len(set(self.stages[self.stages >= 0].tolist()))
        minutes = len(self) * self.epoch_s / 60
        return (f"<Hypnogram | {len(self)} epochs x {self.epoch_s:g}s ({minutes:.2f} minutes), "
                f"{n_unique} unique stages>")

    @property
    def duration_s(self) -> float:
        return len(self) * self.epoch_s

    def to_frame(self) -> pd.DataFrame:
        """SleepFM's CSV layout: ``Start,Stop,StageName,StageNumber`` (unscored: ``?``, -1)."""
        start = np.arange(len(self)) * self.epoch_s
        names = np.array(list(self.classes) + ["?"], dtype=object)[self.stages]
        return pd.DataFrame({"Start": start, "Stop": start + self.epoch_s, "StageName": names,
                             "StageNumber": self.stages.astype(int)})

    def to_csv(self, path) -> None:
        """Write SleepFM's CSV atomically."""
        write_text_atomic(path, self.to_frame().to_csv(index=False))
