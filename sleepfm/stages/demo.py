"""``sleepfm demo``: the whole pipeline on a data folder, stage after stage, into one run directory:
preprocess → pretrain → embed → staging and event heads → evaluation on held-out subjects."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DemoConfig, load_config
from ..models import ENCODERS
from ..rundir import RunDir
from .embed import embed
from .evaluate import Evaluation, evaluate
from .finetune import finetune
from .preprocess import BatchResult, preprocess_directory
from .pretrain import pretrain

logger = logging.getLogger(__name__)

#: The heads the demo trains, with their mode.
DEMO_HEADS: tuple[tuple[str, str], ...] = (("staging", "lstm"), ("events", "linear"))


@dataclass
class DemoResult:
    """What :func:`demo` made: the preprocessing batch, the encoder, the embedding status and an
    evaluation per head."""

    run: RunDir
    batch: BatchResult
    encoder_dir: Path
    embedded: dict[str, str]
    evaluations: dict[str, Evaluation] = field(default_factory=dict)


def demo(data_dir, run_dir, config: DemoConfig | str | None = None, *, progress: bool = True,
         **overrides) -> DemoResult:
    """Run every stage on ``data_dir`` into ``run_dir``; rerunning skips or resumes each stage.

    Recordings that fail to preprocess are reported and left out; the others go on.

    Examples
    --------
    >>> result = demo("data_samples", "runs/demo", encoder="sleepfm_tiny", epochs=1)
    >>> result.evaluations["staging"].summary
    """
    config = load_config(DemoConfig, config, **overrides)
    ENCODERS[config.encoder]  # an unknown name fails now, not after hours of preprocessing
    run = RunDir(run_dir)
    batch = preprocess_directory(data_dir, run, workers=config.workers, progress=progress)
    if batch.failed:
        logger.warning("demo: %d recordings failed to preprocess; continuing with the others",
                       len(batch.failed))
    encoder_dir = pretrain(run, encoder=config.encoder, max_epochs=config.epochs, batch_size=8,
                           val_fraction=0.25, patience=0, progress=progress)
    status = embed(run, checkpoint=encoder_dir, progress=progress)
    result = DemoResult(run, batch, encoder_dir, status)
    for task, mode in DEMO_HEADS:
        finetune(run, task, mode=mode, skip_unlabelled=True)
        result.evaluations[task] = evaluate(run, task, n_boot=config.n_boot)
    return result
