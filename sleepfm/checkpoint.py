"""One artefact format for everything saved with weights: encoders, heads, fine-tuned networks.

An artefact is a directory::

    model.safetensors   the tensors (CPU, contiguous); nothing is pickled
    config.json         format, format version, kind ("encoder" or "head"), sleepfm and torch
                        versions, creation time (UTC), SHA-256 of the weights, and what the kind
                        needs to rebuild the model
    ...                 files a kind adds (a head's ``split.json``, a fine-tuned encoder in
                        ``encoder/``, itself an artefact)

The whole directory is written beside the target and swapped into place, so a crash never leaves a
half-written artefact under the target name. Loading checks the format, its version, the kind and
the checksum before any tensor is read; every failure is a :class:`~sleepfm.exceptions.StoreError`
naming the file and the remedy. This module knows no model: :mod:`sleepfm.artifacts` maps models
onto it. PyTorch is imported only to read or write tensors, so a run directory's records and ids
(:class:`sleepfm.RunDir`) are read without it.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .exceptions import StoreError
from .utils import atomic_directory, sha256_file, to_jsonable

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

FORMAT = "sleepfm-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
KINDS: tuple[str, ...] = ("encoder", "head")



def key_mismatch(missing, unexpected, shapes) -> str:
    """What a state dict lacks, has in excess and has of another shape, e.g. ``"1 missing (a.b),
    2 of another shape (x: file (3,), model (4,); ...)"``; empty when everything fits."""
    def some(items, sep=", "):
        items = sorted(items)
        return sep.join(items[:3]) + (f"{sep}…" if len(items) > 3 else "")

    parts = [f"{len(missing)} missing ({some(missing)})" if missing else "",
             f"{len(unexpected)} unexpected ({some(unexpected)})" if unexpected else "",
             f"{len(shapes)} of another shape ({some(shapes, '; ')})" if shapes else ""]
    return ", ".join(p for p in parts if p)


def state_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """:func:`key_mismatch` of a state dict against the one a module expects (empty: it fits)."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    return key_mismatch(missing, unexpected, shapes)

def _is_artifact(directory: Path) -> bool:
    """True when ``directory`` holds an artefact of this format (so a save may replace it)."""
    try:
        return json.loads((directory / CONFIG_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_artifact(directory: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                   record: Mapping[str, Any], *, kind: str) -> None:
    """Write an artefact's two files into ``directory`` (created; use inside an atomic write).

    Raises
    ------
    TypeError
        ``record`` holds values that are not JSON-serialisable.
    """
    import torch  # heavy: loaded when tensors are written, not to read a record
    from safetensors.torch import save_file

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
            "sleepfm_version": __version__, "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **to_jsonable(dict(record))}
    try:
        json.dumps(body)  # before anything is written
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"the {kind}'s metadata must be JSON-serialisable (str, numbers, lists, dicts): "
            f"{err}. Convert other objects to one of those first."
        ) from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    body["weights_sha256"] = sha256_file(directory / WEIGHTS_NAME)
    (directory / CONFIG_NAME).write_text(json.dumps(body, indent=2) + "\n")


def save_artifact(directory: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                  record: Mapping[str, Any], *, kind: str,
                  extra: Callable[[Path], None] | None = None) -> Path:
    """Save an artefact atomically; ``extra(tmp_dir)`` may add files before it is swapped in.

    An existing artefact at ``directory`` is replaced; a directory holding anything else is
    refused (:class:`StoreError`).
    """
    directory = Path(directory)
    with atomic_directory(directory, may_replace=_is_artifact) as tmp:
        write_artifact(tmp, tensors, record, kind=kind)
        if extra is not None:
            extra(tmp)
    return directory


def read_record(directory: str | os.PathLike, *, kind: str) -> dict[str, Any]:
    """The checked ``config.json`` of an artefact of ``kind`` (no tensor is read)."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise StoreError(f"No checkpoint directory at {directory}; pass the directory written by "
                         f"sleepfm (e.g. RUN_DIR/checkpoints/encoder), not a file inside it.")
    if not config_path.is_file():
        raise StoreError(f"{directory} has no {CONFIG_NAME}, so it is not a sleepfm {kind} (or its "
                         "save was interrupted); save it again.")
    try:
        record = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{config_path} is not valid JSON ({err}); the {kind} is corrupt, save it "
                         "again.") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise StoreError(f"{config_path} is not a sleepfm checkpoint config (it lacks "
                         f"\"format\": \"{FORMAT}\"); pass a directory saved by sleepfm.")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(f"{config_path} has format version {version!r}; this sleepfm reads "
                         f"versions up to {FORMAT_VERSION}. Upgrade sleepfm, or save it again.")
    if record.get("kind") != kind:
        raise StoreError(f"{directory} holds an artefact of kind {record.get('kind')!r} where "
                         f"one of kind {kind!r} was expected; pass the directory of the {kind}.")
    return record


def read_artifact(directory: str | os.PathLike, *,
                  kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (on the CPU) and record of an artefact, after checking format, kind and checksum.

    Raises
    ------
    StoreError
        A missing directory or file, invalid JSON, an unknown format or version, another kind,
        weights that fail their checksum or are not a safetensors file.
    """
    from safetensors import SafetensorError  # heavy: loaded when tensors are read
    from safetensors.torch import load_file

    directory = Path(directory)
    record = read_record(directory, kind=kind)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise StoreError(f"{directory} has no {WEIGHTS_NAME}; the {kind} is incomplete, save it "
                         "again.")
    expected = record.get("weights_sha256")
    if expected is not None and sha256_file(weights_path) != expected:
        raise StoreError(f"{weights_path} does not match the checksum in {CONFIG_NAME} (truncated, "
                         "corrupted or replaced); copy the artefact again or re-save it.")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise StoreError(f"{weights_path} is not a readable safetensors file ({err}); save it "
                         "again.") from None
    logger.info("read %s from %s (created %s)", kind, directory, record.get("created", "?"))
    return tensors, record


def artifact_id(record: Mapping[str, Any]) -> str:
    """Short id of an artefact: the first 16 hex digits of its weights' SHA-256."""
    return str(record.get("weights_sha256", ""))[:16]
