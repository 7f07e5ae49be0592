"""What ``sleepfm finetune`` returns, for every task."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class FinetuneResult:
    """What :func:`finetune` trained: the heads, where they are saved, the split and the data."""

    task: str
    mode: str
    directory: Path
    heads: dict
    split: dict
    train_records: list[str]
    val_score: float | None
    info: dict

    def __repr__(self) -> str:
        score = "" if self.val_score is None else f", val score {self.val_score:.3f}"
        return (f"<FinetuneResult {self.task}/{self.mode} | {len(self.train_records)} training "
                f"nights, {len(self.split['test'])} test nights{score} → {self.directory}>")
