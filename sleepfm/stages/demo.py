"""``sleepfm demo``: the whole pipeline into one run directory, stage after stage.

The recordings of a data folder (``data_samples/``: a real Sleep-EDF excerpt and a few synthetic
nights) and a **synthetic cohort** generated at demo time (``RUN/demo_cohort``: ``subjects``
short nights whose outcomes follow a known hazard of what the nights show, see
:mod:`sleepfm.synthetic_cohort`) are preprocessed → pre-training → embeddings → staging and event
heads → Cox heads of four phenotypes beside the demographics baseline → evaluation on held-out
subjects with subgroup fairness, trial enrichment and per-modality attribution. The cohort is a
function of its settings, so a rerun reuses it, and every stage skips or resumes its work.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DemoConfig, load_config
from ..models import ENCODERS
from ..rundir import RunDir
from ..synthetic_cohort import write_synthetic_cohort
from ..utils import write_json_atomic
from .embed import embed
from .evaluate import evaluate
from .finetune import finetune
from .preprocess import BatchResult, preprocess_directory
from .pretrain import pretrain

logger = logging.getLogger(__name__)

#: The heads the demo trains, with their mode.
DEMO_HEADS: tuple[tuple[str, str], ...] = (("staging", "lstm"), ("events", "linear"),
                                           ("disease", "lstm"))
#: Fraction of the subjects the demo holds out for testing (more than the default 20 %, so the
#: disease metrics have enough events).
TEST_SIZE = 0.3


@dataclass
class DemoResult:
    """What :func:`demo` made: the preprocessing batches (the data folder's and the cohort's),
    the encoder, the embedding status and an evaluation per head."""

    run: RunDir
    batch: BatchResult
    cohort_batch: BatchResult | None
    encoder_dir: Path
    embedded: dict[str, str]
    evaluations: dict = field(default_factory=dict)


def demo_cohort(run: RunDir, config: DemoConfig) -> Path:
    """``RUN/demo_cohort``: the synthetic cohort of the config, written unless already there."""
    folder = run.demo_cohort_dir
    settings = {"subjects": config.subjects, "minutes": config.minutes, "seed": config.seed}
    stamp = folder / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return folder
    logger.warning("generating a synthetic cohort of %d subjects (%g min nights) in %s",
                   config.subjects, config.minutes, folder)
    stamp.unlink(missing_ok=True)
    write_synthetic_cohort(folder, config.subjects, minutes=config.minutes, seed=config.seed)
    write_json_atomic(stamp, settings)
    return folder


def demo(data_dir, run_dir, config: DemoConfig | str | None = None, *, progress: bool = True,
         **overrides) -> DemoResult:
    """Run every stage on ``data_dir`` and a synthetic cohort into ``run_dir``.

    Recordings that fail to preprocess are reported and left out; the others go on. Without a
    cohort (``subjects=0``) there are no outcomes, and no disease head.

    Examples
    --------
    >>> result = demo("data_samples", "runs/demo", encoder="sleepfm_tiny", subjects=300)
    >>> result.evaluations["disease"].c_index("head - baseline")
    """
    config = load_config(DemoConfig, config, **overrides)
    ENCODERS[config.encoder]  # an unknown name fails now, not after hours of preprocessing
    run = RunDir(run_dir)
    batch = preprocess_directory(data_dir, run, workers=config.workers, progress=progress)
    cohort_batch = None
    if config.subjects:
        cohort_batch = preprocess_directory(demo_cohort(run, config), run,
                                            workers=config.workers, progress=progress)
    for b in (batch, cohort_batch):
        if b is not None and b.failed:
            logger.warning("demo: %d recordings failed to preprocess; continuing with the others",
                           len(b.failed))
    encoder_dir = pretrain(run, encoder=config.encoder, max_epochs=config.epochs,
                           max_steps=config.max_steps, batch_size=8, val_fraction=0.1,
                           patience=0, seed=config.seed, progress=progress)
    status = embed(run, checkpoint=encoder_dir, progress=progress)
    result = DemoResult(run, batch, cohort_batch, encoder_dir, status)
    for task, mode in DEMO_HEADS:
        if task == "disease":
            if not config.subjects:
                continue
            finetune(run, task, mode=mode, outcomes=str(run.demo_cohort_dir / "outcomes"),
                     test_size=TEST_SIZE, seed=config.seed)
        else:
            finetune(run, task, mode=mode, skip_unlabelled=True, test_size=TEST_SIZE,
                     seed=config.seed)
        result.evaluations[task] = evaluate(run, task, n_boot=config.n_boot)
    return result
