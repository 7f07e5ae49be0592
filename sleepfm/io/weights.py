"""Published checkpoints as files: OSF's released backbone and SleepFM's released models, read
without unpickling code.

OSF releases its backbone as ``osf_backbone.pth``, a ``torch.save`` of
``{"metadata": {num_leads, seq_len, patch_size_time, patch_size_ch, lead_wise, ...},
"state_dict": {name: tensor}}``. :func:`read_osf_payload` reads it with
``torch.load(..., weights_only=True)`` only, so a file holding a pickled Python object is refused
rather than run, and checks its structure. This module knows no model (``io`` sits below
``models``): the key map onto the backbone is :func:`sleepfm.models.vit1d.checkpoint_filter_fn`,
and :func:`sleepfm.artifacts.read_osf_checkpoint` / :func:`sleepfm.artifacts.import_osf_weights`
join the two.

SleepFM (zou-group/sleepfm-clinical) releases a ``checkpoints/`` folder of model folders, each a
``config.json`` beside ``best.pt``/``best.pth``; :func:`read_sleepfm_clinical` reads them the same
safe way, with the reference's channel table and phenotype names found beside them.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..exceptions import StoreError
from ..utils import sha256_file

if TYPE_CHECKING:
    import torch

__all__ = ["OSFPayload", "ReferenceCheckpoint", "SLEEPFM_CLINICAL_MODELS", "SleepFMClinicalRelease",
           "read_osf_payload", "read_sleepfm_clinical"]

_FIX = ("Pass the payload as released, or re-save it with torch.save({'metadata': {...}, "
        "'state_dict': model.state_dict()}).")


class OSFPayload(NamedTuple):
    """The parts of an OSF backbone payload.

    Attributes
    ----------
    metadata : dict
        JSON-able metadata (``num_leads``, ``seq_len``, ``patch_size_time``, ``patch_size_ch``,
        ``lead_wise``, and whatever else the file records).
    state_dict : dict of str to Tensor
        The tensors, in the reference implementation's names.
    sha256 : str
        Hex SHA-256 of the file.
    path : Path
        The file.
    """

    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    sha256: str
    path: Path


def _load_plain(path: Path, fix: str):
    """``torch.load(weights_only=True)`` on CPU; anything else than plain data is refused."""
    import torch

    try:
        with warnings.catch_warnings():  # torch's advice is about unpickling; not taken
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, AttributeError,
            TypeError, ImportError, KeyError, IndexError) as err:
        raise _refusal(path, err, fix) from None


def _refusal(path: Path, err: Exception, fix: str) -> StoreError:
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found or "Unsupported class" in text:
        what = f" ({found.group(1)})" if found else ""
        return StoreError(
            f"{path} holds a pickled Python object{what}; sleepfm accepts only plain tensors, "
            "dicts, lists, numbers and strings in a payload and never unpickles code. " + fix)
    return StoreError(f"{path} cannot be read as a PyTorch payload of plain tensors and dicts "
                      f"({type(err).__name__}); it is corrupt, truncated or not a torch.save "
                      "file. " + fix)


def read_osf_payload(path: str | os.PathLike) -> OSFPayload:
    """Read an OSF backbone payload with ``torch.load(weights_only=True)`` and check its parts.

    Parameters
    ----------
    path : path-like
        The ``.pth`` file (e.g. ``osf_backbone.pth``).

    Returns
    -------
    OSFPayload
        ``metadata``, ``state_dict`` (CPU tensors), the file's ``sha256`` and ``path``.

    Raises
    ------
    StoreError
        The file is missing, unreadable, holds a pickled object (nothing is unpickled), or is
        not ``{"metadata": dict, "state_dict": {str: tensor}}``.
    """
    import torch  # heavy: loaded when a payload is read

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: payload not found; pass the path of the .pth file OSF "
                         "released (e.g. osf_backbone.pth).")
    payload = _load_plain(path, _FIX)
    if not isinstance(payload, dict) or not {"metadata", "state_dict"} <= set(payload):
        got = (f"keys {sorted(map(str, payload))[:8]}" if isinstance(payload, dict)
               else f"a {type(payload).__name__}")
        raise StoreError(f"{path} is not an OSF backbone payload: expected a dict with "
                         f"'metadata' and 'state_dict', got {got}. " + _FIX)
    metadata, state = payload["metadata"], payload["state_dict"]
    if not isinstance(metadata, dict):
        raise StoreError(f"{path}: 'metadata' must be a dict, got {type(metadata).__name__}. "
                         + _FIX)
    try:
        metadata = json.loads(json.dumps(metadata))
    except (TypeError, ValueError):
        raise StoreError(f"{path}: 'metadata' must hold plain values (numbers, strings, lists, "
                         "dicts), not tensors or other objects. " + _FIX) from None
    if not isinstance(state, dict) or not state:
        raise StoreError(f"{path}: 'state_dict' must be a non-empty dict of tensors, got "
                         f"{type(state).__name__ if not isinstance(state, dict) else 'nothing'}. "
                         + _FIX)
    bad = sorted(str(k) for k, v in state.items()
                 if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise StoreError(f"{path}: 'state_dict' must map names to tensors; {len(bad)} entries do "
                         f"not ({', '.join(bad[:3])}). " + _FIX)
    return OSFPayload(metadata, dict(state), sha256_file(path), path)


# --------------------------------------------------------------------------------------------------
# SleepFM (zou-group/sleepfm-clinical)
# --------------------------------------------------------------------------------------------------
#: The released SleepFM models by the ``model`` their ``config.json`` names: our part and the
#: checkpoint file beside it (``best.pt`` holds ``{"state_dict": ..., "epoch": ...}``, ``best.pth``
#: the bare state dict).
SLEEPFM_CLINICAL_MODELS: dict[str, tuple[str, str]] = {
    "SetTransformer": ("encoder", "best.pt"),
    "SleepEventLSTMClassifier": ("staging", "best.pth"),
    "DiagnosisFinetuneFullLSTMCOXPHWithDemo": ("diagnosis", "best.pth"),
}

_CLINICAL_FIX = ("Pass the reference's sleepfm/checkpoints/ folder (or one model folder in it) "
                 "with its files as released.")


class ReferenceCheckpoint(NamedTuple):
    """One released SleepFM model: ``config`` (its ``config.json``), ``state_dict`` (reference
    names, a ``module.`` prefix stripped), the checkpoint's ``sha256`` and ``path``."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    sha256: str
    path: Path


class SleepFMClinicalRelease(NamedTuple):
    """What :func:`read_sleepfm_clinical` found.

    Attributes
    ----------
    models : dict of str to ReferenceCheckpoint
        By part: ``encoder``, ``staging``, ``diagnosis`` (those present).
    channel_groups : Path or None
        The reference's ``channel_groups.json`` (exact channel names per modality).
    label_mapping : Path or None
        ``label_mapping.csv`` (the names of the diagnosis model's outputs).
    """

    models: dict[str, ReferenceCheckpoint]
    channel_groups: Path | None
    label_mapping: Path | None


def _model_folders(src: Path) -> list[Path]:
    if (src / "config.json").is_file():
        return [src]
    return sorted(p for p in src.iterdir() if (p / "config.json").is_file())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: not readable as JSON ({err}). " + _CLINICAL_FIX) from None


def _reference_state(path: Path, payload) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload:
        raise StoreError(f"{path} holds no state dict (expected a dict of tensors, or one under "
                         "'state_dict'). " + _CLINICAL_FIX)
    bad = sorted(str(k) for k, v in payload.items()
                 if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise StoreError(f"{path}: the state dict must map names to tensors; {len(bad)} entries "
                         f"do not ({', '.join(bad[:3])}). " + _CLINICAL_FIX)
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _beside(src: Path, name: str) -> Path | None:
    """``name`` in SRC, its parent, or the reference's ``configs/`` next to ``checkpoints/``."""
    for folder in (src, src.parent, src.parent / "configs", src.parent.parent / "configs"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_sleepfm_clinical(src: str | os.PathLike) -> SleepFMClinicalRelease:
    """Read the released SleepFM checkpoints with ``torch.load(weights_only=True)`` only.

    Parameters
    ----------
    src : path-like
        The reference's ``sleepfm/checkpoints/`` folder (``model_base``, ``model_sleep_staging``,
        ``model_diagnosis``, each a ``config.json`` beside ``best.pt``/``best.pth``) or one of
        those folders. ``channel_groups.json`` and ``label_mapping.csv`` are looked for in SRC,
        beside it and in the reference's ``configs/`` folder.

    Raises
    ------
    StoreError
        SRC holds no released model, a ``config.json`` names an unknown model or is unreadable,
        a checkpoint is missing, holds a pickled object (nothing is unpickled) or no state dict.
    """
    src = Path(src)
    if not src.is_dir():
        raise StoreError(f"{src}: not a folder. " + _CLINICAL_FIX)
    models: dict[str, ReferenceCheckpoint] = {}
    for folder in _model_folders(src):
        config = _read_json(folder / "config.json")
        name = config.get("model") if isinstance(config, dict) else None
        if name not in SLEEPFM_CLINICAL_MODELS:
            raise StoreError(f"{folder / 'config.json'} names model {name!r}; sleepfm imports "
                             f"{', '.join(SLEEPFM_CLINICAL_MODELS)}. " + _CLINICAL_FIX)
        part, file = SLEEPFM_CLINICAL_MODELS[name]
        path = folder / file
        if not path.is_file():
            raise StoreError(f"{path}: checkpoint not found beside {folder / 'config.json'}; "
                             "download it with the reference's checkpoints (git lfs pull). "
                             + _CLINICAL_FIX)
        if part in models:
            raise StoreError(f"{src} holds two {name} models ({models[part].path.parent} and "
                             f"{folder}); pass one of the folders.")
        state = _reference_state(path, _load_plain(path, _CLINICAL_FIX))
        models[part] = ReferenceCheckpoint(config, state, sha256_file(path), path)
    if not models:
        raise StoreError(f"{src} holds no released SleepFM model (no folder with config.json). "
                         + _CLINICAL_FIX)
    return SleepFMClinicalRelease(models, _beside(src, "channel_groups.json"),
                                  _beside(src, "label_mapping.csv"))
