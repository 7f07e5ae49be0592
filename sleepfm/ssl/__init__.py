"""Pre-training objectives behind one interface, with a registry by name.

>>> from sleepfm.ssl import create_objective, list_objectives
>>> list_objectives()
['ar', 'dino', 'loo_contrastive', 'mae', 'pairwise_contrastive', 'simclr', 'vqvae']
>>> objective = create_objective("loo_contrastive", temperature=0.1)
"""
from .base import (
    ModalityObjective,
    Objective,
    create_objective,
    list_objectives,
    masked_info_nce,
    modality_embeddings,
    register_objective,
    stack_modalities,
)
from .autoregressive import Autoregressive  # importing a module registers its objective
from .dino import DINO
from .loo_contrastive import LeaveOneOutContrastive
from .mae import MAE
from .pairwise_contrastive import PairwiseContrastive
from .simclr import SimCLR
from .vqvae import VQVAE

__all__ = [
    "Autoregressive",
    "DINO",
    "LeaveOneOutContrastive",
    "MAE",
    "ModalityObjective",
    "Objective",
    "PairwiseContrastive",
    "SimCLR",
    "VQVAE",
    "create_objective",
    "list_objectives",
    "masked_info_nce",
    "modality_embeddings",
    "register_objective",
    "stack_modalities",
]
