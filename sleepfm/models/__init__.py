"""Encoders: the SleepFM tokenizer, channel pooling and temporal transformer, and a registry by name."""
from .sleepfm import (
    ChannelAttentionPool,
    ConvTokenizer,
    SleepFMConfig,
    SleepFMEncoder,
    SleepFMOutput,
    TemporalTransformer,
    count_parameters,
    create_encoder,
    fuse_modalities,
    list_encoders,
    pool_epochs,
    pool_windows,
    register_encoder,
)

__all__ = [
    "ChannelAttentionPool",
    "ConvTokenizer",
    "SleepFMConfig",
    "SleepFMEncoder",
    "SleepFMOutput",
    "TemporalTransformer",
    "count_parameters",
    "create_encoder",
    "fuse_modalities",
    "list_encoders",
    "pool_epochs",
    "pool_windows",
    "register_encoder",
]
