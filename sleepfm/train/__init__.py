"""Lightning modules: the training loops of pre-training and end-to-end fine-tuning (the networks
live in :mod:`sleepfm.models`; the stages in :mod:`sleepfm.stages` run them on a run directory)."""
from .finetune_module import StagingFinetuneModule
from .pretrain_module import PretrainModule

__all__ = ["PretrainModule", "StagingFinetuneModule"]
