"""Encoders by name (``create_encoder("sleepfm_base")``) and architectures by class name.

A model family file registers its constructors with :func:`register_encoder` and its model class
with :func:`register_architecture`; a saved encoder names its architecture, so
:func:`sleepfm.artifacts.load_encoder` can rebuild any registered family.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry

ENCODERS = Registry("encoder")
ARCHITECTURES = Registry("architecture")
register_encoder = ENCODERS.register
register_architecture = ARCHITECTURES.register
list_encoders = ENCODERS.names


class ConfiguredEncoder(nn.Module):
    """Base of the SleepFM encoder families: what the stages read of an encoder, from its
    ``config`` (``modalities``, ``embed_dim``)."""

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities this encoder accepts."""
        return self.config.modalities

    @property
    def embed_dim(self) -> int:
        """Token dimension ``D``."""
        return self.config.embed_dim


def create_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build a registered encoder, overriding any of its config fields.

    Parameters
    ----------
    name : str
        A name from :func:`list_encoders`.
    **overrides
        Config fields to change, e.g. ``modalities=("BAS", "RESP")``.

    Returns
    -------
    nn.Module
        A randomly initialised encoder.

    Raises
    ------
    InvalidParameterError
        Unknown name (the message lists the known ones) or an invalid config field.

    Examples
    --------
    >>> encoder = create_encoder("sleepfm_tiny", modalities=("BAS", "RESP"))
    """
    return ENCODERS.create(name, **overrides)
