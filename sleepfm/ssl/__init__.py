"""Pre-training objectives behind one interface, with a registry by name.

>>> from sleepfm.ssl import create_objective, list_objectives
>>> list_objectives()
['loo_contrastive', 'pairwise_contrastive']
>>> objective = create_objective("loo_contrastive", temperature=0.1)
"""
from .base import (
    Objective,
    create_objective,
    list_objectives,
    masked_info_nce,
    register_objective,
    stack_modalities,
)
from .loo_contrastive import LeaveOneOutContrastive  # importing a module registers its objective
from .pairwise_contrastive import PairwiseContrastive

__all__ = [
    "LeaveOneOutContrastive",
    "Objective",
    "PairwiseContrastive",
    "create_objective",
    "list_objectives",
    "masked_info_nce",
    "register_objective",
    "stack_modalities",
]
