"""Models know tensors, not files: the SleepFM and OSF ViT-1D encoder families, their registry,
and the heads."""
from .factory import ARCHITECTURES, ENCODERS, create_encoder, list_encoders, register_encoder
from .sleepfm import (
    ChannelAttentionPool,
    ConvTokenizer,
    SleepFMConfig,
    SleepFMEncoder,
    SleepFMOutput,
    TemporalTransformer,
    count_parameters,
    fuse_modalities,
    pool_epochs,
    pool_windows,
)
from .sleepfm_reference import SleepFMReference, SleepFMReferenceConfig
from .vit1d import ViT1D, ViT1DConfig

__all__ = [
    "ARCHITECTURES",
    "ChannelAttentionPool",
    "ConvTokenizer",
    "ENCODERS",
    "SleepFMConfig",
    "SleepFMEncoder",
    "SleepFMOutput",
    "SleepFMReference",
    "SleepFMReferenceConfig",
    "TemporalTransformer",
    "ViT1D",
    "ViT1DConfig",
    "count_parameters",
    "create_encoder",
    "fuse_modalities",
    "list_encoders",
    "pool_epochs",
    "pool_windows",
    "register_encoder",
]
