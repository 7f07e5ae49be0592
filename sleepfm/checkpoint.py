"""Save and load encoders: weights in safetensors, everything else in JSON. Nothing is pickled.

A checkpoint is a directory::

    model.safetensors   tensors of ``model.state_dict()`` (CPU, contiguous)
    config.json         format, architecture, config, modalities, parameter count, sleepfm and
                        torch versions, creation time (UTC), SHA-256 of the weights, user metadata

It is written into a temporary directory beside the target and renamed into place, so a crash
never leaves a half-written checkpoint under the target name.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .exceptions import StoreError
from .models.sleepfm import SleepFMConfig, SleepFMEncoder, count_parameters
from .utils import sha256_file

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_checkpoint", "save_checkpoint"]

FORMAT = "sleepfm-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

_ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "SleepFMEncoder": (SleepFMEncoder, SleepFMConfig),
}


def _package_version() -> str:
    try:
        return importlib.metadata.version("sleepfm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def save_checkpoint(
    model: nn.Module, directory: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Save an encoder's weights and config to ``directory``.

    Parameters
    ----------
    model : SleepFMEncoder
        The encoder (a ``torch.compile`` wrapper around one is unwrapped).
    directory : path-like
        Target directory; created, or replaced if it already holds a checkpoint (only
        ``config.json`` and ``model.safetensors``).
    metadata : dict, optional
        JSON-serialisable free-form information stored under ``"metadata"``, e.g.
        ``{"training_data": {"records": 1200, "cohorts": ["SHHS"]}, "objective": "loo_contrastive"}``.

    Returns
    -------
    Path
        The checkpoint directory.

    Raises
    ------
    TypeError
        ``model`` is not a supported encoder or ``metadata`` is not JSON-serialisable.
    StoreError
        ``directory`` is a file or a directory holding other files.
    """
    model = getattr(model, "_orig_mod", model)
    arch = type(model).__name__
    if arch not in _ARCHITECTURES or not isinstance(model, _ARCHITECTURES[arch][0]):
        raise TypeError(
            f"save_checkpoint supports {', '.join(_ARCHITECTURES)}, got {type(model).__name__}."
        )
    directory = Path(directory)
    _check_target(directory)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "config": model.config.to_dict(),
        "modalities": list(model.config.modalities),
        "num_parameters": count_parameters(model),
        "sleepfm_version": _package_version(),
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metadata": dict(metadata or {}),
    }
    try:
        json.dumps(record["metadata"])
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"metadata must be JSON-serialisable (str, numbers, lists, dicts): {err}. "
            "Convert arrays with .tolist() and paths with str()."
        ) from None
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        record["weights_sha256"] = sha256_file(tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n")
        _move_into_place(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Saved %s (%d parameters) to %s", arch, record["num_parameters"], directory)
    return directory


def _check_target(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory} is a file; pass a directory path for the checkpoint.")
    if directory.is_dir():
        other = sorted(p.name for p in directory.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME))
        if other:
            raise StoreError(
                f"{directory} holds files that are not part of a checkpoint ({', '.join(other[:5])}); "
                "refusing to replace it. Save to a new or empty directory."
            )


def _move_into_place(tmp: Path, directory: Path) -> None:
    """Rename ``tmp`` onto ``directory``; an existing checkpoint there is swapped out, then removed."""
    if not directory.exists():
        os.replace(tmp, directory)
        return
    old = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.old")
    os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except OSError:
        os.replace(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    directory: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an encoder saved by :func:`save_checkpoint`, in eval mode.

    Parameters
    ----------
    directory : path-like
        Checkpoint directory.
    device : str or torch.device, default="cpu"
        Where to put the model.

    Returns
    -------
    model : SleepFMEncoder
        The rebuilt encoder, in eval mode.
    record : dict
        The contents of ``config.json``: ``config``, ``modalities``, ``num_parameters``,
        ``sleepfm_version``, ``torch_version``, ``created``, ``metadata`` (the user's dict), ...

    Raises
    ------
    StoreError
        Missing or corrupt files, an unknown format or architecture, or weights that do not match
        the config. The message names the file and what to do.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not directory.is_dir():
        raise StoreError(
            f"No checkpoint directory at {directory}; pass the directory written by save_checkpoint."
        )
    if not config_path.is_file():
        raise StoreError(
            f"{directory} has no {CONFIG_NAME}, so it is not a sleepfm checkpoint "
            "(or its save was interrupted); save it again."
        )
    try:
        record = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(
            f"{config_path} is not valid JSON ({err}); the checkpoint is corrupt, save it again."
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise StoreError(
            f"{config_path} is not a sleepfm checkpoint config (it lacks \"format\": \"{FORMAT}\")."
        )
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"{config_path} has format version {version!r}; this sleepfm reads versions up to "
            f"{FORMAT_VERSION}. Upgrade sleepfm, or re-save the checkpoint."
        )
    arch = record.get("architecture")
    if arch not in _ARCHITECTURES:
        raise StoreError(
            f"{config_path} names architecture {arch!r}; "
            f"known architectures: {', '.join(_ARCHITECTURES)}."
        )
    model_cls, config_cls = _ARCHITECTURES[arch]
    try:
        config = config_cls.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"{config_path} holds an invalid config: {err}") from None

    if not weights_path.is_file():
        raise StoreError(
            f"{directory} has no {WEIGHTS_NAME}; the checkpoint is incomplete, save it again."
        )
    expected_sha = record.get("weights_sha256")
    if expected_sha is not None and sha256_file(weights_path) != expected_sha:
        raise StoreError(
            f"{weights_path} does not match the checksum in {CONFIG_NAME} (truncated, corrupted or "
            "replaced); copy the checkpoint again or re-save it."
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise StoreError(
            f"{weights_path} is not a readable safetensors file ({err}); save it again."
        ) from None

    model = model_cls(config)
    _check_state(model, state, weights_path)
    model.load_state_dict(state)
    model.to(device).eval()
    logger.info("Loaded %s from %s (created %s)", arch, directory, record.get("created", "?"))
    return model, record


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, config {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {'; '.join(shapes[:3])})")
        raise StoreError(
            f"The weights in {path} do not match the config in {CONFIG_NAME}: tensors "
            + ", ".join(parts)
            + ". Save the model again, or fix the config to the one it was trained with."
        )
