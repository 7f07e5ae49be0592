"""Published checkpoints as files: reading OSF's released backbone payload without unpickling code.

OSF releases its backbone as ``osf_backbone.pth``, a ``torch.save`` of
``{"metadata": {num_leads, seq_len, patch_size_time, patch_size_ch, lead_wise, ...},
"state_dict": {name: tensor}}``. :func:`read_osf_payload` reads it with
``torch.load(..., weights_only=True)`` only, so a file holding a pickled Python object is refused
rather than run, and checks its structure. This module knows no model (``io`` sits below
``models``): the key map onto the backbone is :func:`sleepfm.models.vit1d.checkpoint_filter_fn`,
and :func:`sleepfm.artifacts.read_osf_checkpoint` / :func:`sleepfm.artifacts.import_osf_weights`
join the two.
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

__all__ = ["OSFPayload", "read_osf_payload"]

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


def _refusal(path: Path, err: Exception) -> StoreError:
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found or "Unsupported class" in text:
        what = f" ({found.group(1)})" if found else ""
        return StoreError(
            f"{path} holds a pickled Python object{what}; sleepfm accepts only plain tensors, "
            "dicts, lists, numbers and strings in a payload and never unpickles code. " + _FIX)
    return StoreError(f"{path} cannot be read as a PyTorch payload of plain tensors and dicts "
                      f"({type(err).__name__}); it is corrupt, truncated or not a torch.save "
                      "file. " + _FIX)


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
    try:
        with warnings.catch_warnings():  # torch's advice is about unpickling; not taken
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, AttributeError,
            TypeError, ImportError, KeyError, IndexError) as err:
        raise _refusal(path, err) from None
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
