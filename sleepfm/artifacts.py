"""Encoders and heads as artefacts of the one checkpoint format (:mod:`sleepfm.checkpoint`).

An encoder artefact records its architecture and config, so :func:`load_encoder` rebuilds any
registered model family; a head artefact records, per component (``staging``, ``events``,
``sleep``, ``ahi``, ``window``), the head's registry name, options and fitted values, with the
tensors stored as ``<component>.<name>``. A head fine-tuned end to end keeps its encoder as a
nested encoder artefact in ``encoder/``. Published checkpoints are imported into the same format:
OSF's backbone by :func:`import_osf_weights`, SleepFM's released models by
:func:`import_sleepfm_clinical`.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .channels import channel_group_aliases
from .checkpoint import (
    artifact_id,
    read_artifact,
    read_record,
    save_artifact,
    state_mismatch,
    write_artifact,
)
from .exceptions import InvalidParameterError, StoreError
from .io.outcomes import read_label_mapping
from .io.weights import OSFPayload, read_osf_payload, read_sleepfm_clinical
from .models import ARCHITECTURES, count_parameters
from .models.heads import WindowStagingNet, head_from_state
from .models.heads.reference import (
    ReferenceDiagnosisConfig,
    ReferenceDiagnosisNet,
    ReferenceStagingConfig,
    ReferenceStagingNet,
)
from .models.sleepfm_reference import (
    SleepFMReference,
    checkpoint_filter_fn,
    config_from_reference,
)
from .models.vit1d import ViT1D, vit1d_from_osf
from .utils import write_text_atomic

logger = logging.getLogger(__name__)

ENCODER_SUBDIR = "encoder"


def _encoder_parts(model: nn.Module, metadata: Mapping[str, Any] | None):
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper
    arch = type(model).__name__
    if arch not in ARCHITECTURES or not isinstance(model, ARCHITECTURES[arch]):
        raise TypeError(f"save_encoder supports {', '.join(ARCHITECTURES.names())}, got "
                        f"{type(model).__name__}.")
    record = {"architecture": arch, "config": model.config.to_dict(),
              "modalities": list(model.config.modalities),
              "num_parameters": count_parameters(model), "metadata": dict(metadata or {})}
    return model.state_dict(), record


def save_encoder(model: nn.Module, directory: str | os.PathLike, *,
                 metadata: Mapping[str, Any] | None = None) -> Path:
    """Save an encoder's weights and config to ``directory`` (safetensors + JSON, atomically).

    Parameters
    ----------
    model : SleepFMEncoder or another registered architecture
        The encoder (a ``torch.compile`` wrapper around one is unwrapped).
    directory : path-like
        Target directory; created, or replaced if it already holds an artefact.
    metadata : dict, optional
        JSON-serialisable free-form information stored under ``"metadata"``, e.g.
        ``{"training_data": {"records": 1200}, "objective": "loo_contrastive"}``.

    Returns
    -------
    Path
        The artefact directory.

    Raises
    ------
    TypeError
        ``model`` is not a registered architecture, or ``metadata`` is not JSON-serialisable.
    StoreError
        ``directory`` is a file or a directory holding other files.

    Examples
    --------
    >>> save_encoder(create_encoder("sleepfm_tiny"), "runs/demo/checkpoints/encoder")
    PosixPath('runs/demo/checkpoints/encoder')
    """
    state, record = _encoder_parts(model, metadata)
    save_artifact(directory, state, record, kind="encoder")
    logger.info("saved %s (%d parameters) to %s", record["architecture"],
                record["num_parameters"], directory)
    return Path(directory)


def load_encoder(directory: str | os.PathLike, *,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load an encoder saved by :func:`save_encoder`, in eval mode.

    Parameters
    ----------
    directory : path-like
        The encoder artefact (e.g. ``RUN_DIR/checkpoints/encoder``).
    device : str or torch.device, default="cpu"
        Where to put the model.

    Returns
    -------
    model : nn.Module
        The rebuilt encoder, in eval mode.
    record : dict
        The artefact's ``config.json``: ``config``, ``modalities``, ``num_parameters``,
        ``sleepfm_version``, ``torch_version``, ``created``, ``weights_sha256``, ``metadata``...

    Raises
    ------
    StoreError
        Missing or corrupt files, an unknown format, kind or architecture, or weights that do not
        match the config; the message names the file and what to do. Nothing is unpickled.

    Examples
    --------
    >>> encoder, record = load_encoder("runs/demo/checkpoints/encoder")
    """
    directory = Path(directory)
    tensors, record = read_artifact(directory, kind="encoder")
    config_path = directory / "config.json"
    arch = record.get("architecture")
    if arch not in ARCHITECTURES:
        raise StoreError(f"{config_path} names architecture {arch!r}; known architectures: "
                         f"{', '.join(ARCHITECTURES.names())}. Upgrade sleepfm or re-save it.")
    model_cls = ARCHITECTURES[arch]
    try:
        config = model_cls.config_class.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"{config_path} holds an invalid config: {err}") from None
    model = model_cls(config)
    _check_state(model, tensors, directory / "model.safetensors")
    model.load_state_dict(tensors)
    return model.to(device).eval(), record


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise StoreError(f"The weights in {path} do not match the config in config.json: tensors "
                         f"{mismatch}. Save the model again, or fix the config to the one it was "
                         "trained with.")


def save_heads(directory: str | os.PathLike, components: Mapping[str, Any], info: Mapping[str, Any],
               *, extra: Callable[[Path], None] | None = None,
               encoder_metadata: Mapping[str, Any] | None = None) -> Path:
    """Save fitted heads as one head artefact (atomically, with whatever ``extra`` adds).

    Parameters
    ----------
    directory : path-like
        ``RUN_DIR/heads/<task>``.
    components : dict of str to head
        Fitted heads with ``get_state()`` (e.g. ``{"staging": StagingHead}``); a
        :class:`WindowStagingNet` brings its encoder, saved in ``encoder/``.
    info : dict
        JSON-able description (task, mode, classes, embedding, encoder id, split…).
    extra : callable, optional
        ``extra(tmp_dir)`` writes more files into the artefact before it is swapped in.
    encoder_metadata : dict, optional
        Metadata of the nested encoder of a :class:`WindowStagingNet`.
    """
    tensors, metas, nets = {}, {}, []
    for name, head in components.items():
        t, meta = head.get_state()
        tensors.update({f"{name}.{k}": v for k, v in t.items()})
        metas[name] = meta
        if isinstance(head, WindowStagingNet):
            nets.append(head)

    def add(tmp: Path) -> None:
        for net in nets:
            write_artifact(tmp / ENCODER_SUBDIR, *_encoder_parts(net.encoder, encoder_metadata),
                           kind="encoder")
        if extra is not None:
            extra(tmp)

    return save_artifact(directory, tensors, {**info, "components": metas}, kind="head", extra=add)


def load_heads(directory: str | os.PathLike, *,
               device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Heads saved by :func:`save_heads`: ``({component: head}, record)``.

    Raises
    ------
    StoreError
        As :func:`load_encoder`, plus a component whose head is unknown or whose weights do not
        fit it.
    """
    directory = Path(directory)
    tensors, record = read_artifact(directory, kind="head")
    heads = {}
    for name, meta in record.get("components", {}).items():
        part = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        encoder = None
        if meta.get("head") == WindowStagingNet.head_name:
            encoder, _ = load_encoder(directory / ENCODER_SUBDIR, device=device)
        try:
            heads[name] = head_from_state(part, meta, encoder=encoder)
        except (InvalidParameterError, KeyError, RuntimeError, StoreError, ValueError) as err:
            raise StoreError(f"{directory / 'config.json'}: component {name!r} cannot be rebuilt "
                             f"({err}); train the head again with this sleepfm.") from None
    return heads, record


# --------------------------------------------------------------------------------------------
# published checkpoints
# --------------------------------------------------------------------------------------------
def _osf_model(path: str | os.PathLike) -> tuple[ViT1D, OSFPayload]:
    payload = read_osf_payload(path)
    return vit1d_from_osf(payload.metadata, payload.state_dict, source=str(payload.path)), payload


def read_osf_checkpoint(path: str | os.PathLike) -> ViT1D:
    """The OSF backbone of a released payload (``osf_backbone.pth``), as a :class:`ViT1D`.

    The file is read with ``torch.load(..., weights_only=True)`` only; the architecture comes from
    its ``metadata`` and tensor shapes, and its keys are mapped onto :class:`ViT1D` by
    :func:`sleepfm.models.vit1d.checkpoint_filter_fn`.

    Parameters
    ----------
    path : path-like
        ``{"metadata": {num_leads, seq_len, patch_size_time, patch_size_ch, lead_wise, ...},
        "state_dict": ...}`` as saved by OSF.

    Returns
    -------
    ViT1D
        In eval mode, on the CPU; ``forward_encoding(x)`` gives OSF's ``(cls, patches)``.

    Raises
    ------
    StoreError
        A missing or unreadable file, a pickled object inside (refused, never unpickled),
        metadata that describes no backbone, or keys missing, unexpected or of another shape
        (the message lists some).

    Examples
    --------
    >>> vit = read_osf_checkpoint("pretrained_weights/osf_backbone.pth")
    >>> cls, patches = vit.forward_encoding(x)   # x: [B, 12, 1920], 64 Hz
    """
    return _osf_model(path)[0]


def import_osf_weights(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Import OSF's released backbone into an encoder artefact (safetensors + ``config.json``).

    The artefact loads with :func:`load_encoder`; its ``metadata.source`` records the payload's
    file name, SHA-256 and metadata.

    Parameters
    ----------
    path : path-like
        The OSF payload (see :func:`read_osf_checkpoint`).
    out_dir : path-like
        Encoder directory to write (e.g. ``RUN_DIR/checkpoints/encoder``); created, or replaced
        if it holds an artefact.

    Returns
    -------
    Path
        The artefact directory.

    Raises
    ------
    StoreError
        As :func:`read_osf_checkpoint`, or ``out_dir`` is a file or holds other files.

    Examples
    --------
    >>> import_osf_weights("osf_backbone.pth", "runs/demo/checkpoints/encoder")
    PosixPath('runs/demo/checkpoints/encoder')
    """
    model, payload = _osf_model(path)
    source = {"format": "osf", "file": payload.path.name, "sha256": payload.sha256,
              "metadata": payload.metadata}
    directory = save_encoder(model, out_dir, metadata={"source": source})
    logger.info("imported OSF backbone %s (sha256 %s…) to %s", payload.path, payload.sha256[:16],
                directory)
    return directory


#: What ``import_sleepfm_clinical`` writes in its output folder.
PUBLISHED_MANIFEST = "weights.json"
#: The imported channel table (aliases of :class:`~sleepfm.channels.ChannelMap`) in that folder.
PUBLISHED_CHANNEL_MAP = "channel_map.yaml"
#: The licence of SleepFM's released weights (per the reference's README).
SLEEPFM_CLINICAL_LICENCE = ("MIT (zou-group/sleepfm-clinical); the cohorts' data-use rules stay "
                            "yours")


def _reference_heads(release, found: dict) -> dict[str, Any]:
    """The released staging and diagnosis nets of ``release`` (those present)."""
    heads = {}
    for part, net_class, config_class in (("staging", ReferenceStagingNet, ReferenceStagingConfig),
                                          ("diagnosis", ReferenceDiagnosisNet,
                                           ReferenceDiagnosisConfig)):
        checkpoint = release.models.get(part)
        if checkpoint is None:
            continue
        source = str(checkpoint.path)
        try:
            config = config_class.from_dict(checkpoint.config.get("model_params", {}))
        except InvalidParameterError as err:
            raise StoreError(f"{checkpoint.path.parent / 'config.json'}: {err}") from None
        options = {}
        if part == "diagnosis":
            if release.label_mapping is None:
                raise StoreError(f"{checkpoint.path}: label_mapping.csv (the names of its "
                                 f"{config.num_classes} outputs) was not found beside it or in "
                                 "the reference's configs/ folder; copy it there.")
            options["phenotypes"] = read_label_mapping(release.label_mapping)
            found["label_mapping"] = release.label_mapping.name
        heads[part] = net_class.from_reference_state_dict(checkpoint.state_dict, config,
                                                          source=source, **options)
    return heads


def _provenance(checkpoint) -> dict[str, Any]:
    """Where an imported part came from: its file, SHA-256 and licence."""
    return {"format": "sleepfm-clinical", "file": checkpoint.path.name,
            "sha256": checkpoint.sha256, "licence": SLEEPFM_CLINICAL_LICENCE}


def _reference_channels(path: Path | None, src):
    """The reference's channel table as aliases of ours (None, with a warning, when absent);
    its disagreements with our table are logged."""
    if path is None:
        logger.warning("%s: no channel_groups.json beside the checkpoints; recordings are placed "
                       "by sleepfm's own channel table", src)
        return None
    try:
        table = channel_group_aliases(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, InvalidParameterError) as err:
        raise StoreError(f"{path}: not a channel table ({err}); pass the reference's "
                         "configs/channel_groups.json as released.") from None
    for name, (theirs, ours) in table.disagreements.items():
        logger.warning("channel %r: the reference places it in %s, sleepfm's table in %s; the "
                       "imported channel map follows the reference", name, theirs, ours)
    return table


def import_sleepfm_clinical(src: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Import SleepFM's released models into the project's formats.

    Writes into ``out_dir``: ``encoder/`` (the released ``SetTransformer`` as a
    :class:`~sleepfm.models.sleepfm_reference.SleepFMReference` encoder artefact), ``staging/``
    and ``diagnosis/`` (the released heads, as head artefacts made from that encoder),
    ``channel_map.yaml`` (the reference's channel table as aliases of ours) and, last,
    ``weights.json`` (what was imported from which file, with SHA-256s and the licence).

    Parameters
    ----------
    src : path-like
        The reference's ``sleepfm/checkpoints/`` folder or one model folder in it (see
        :func:`sleepfm.io.weights.read_sleepfm_clinical`).
    out_dir : path-like
        The folder to write (created; its artefacts are replaced).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    StoreError
        As :func:`~sleepfm.io.weights.read_sleepfm_clinical`; keys that do not fit a model
        (listed); a diagnosis model without ``label_mapping.csv``; heads without the encoder
        they were trained on (neither in SRC nor already in ``out_dir``).
    """
    release = read_sleepfm_clinical(src)
    out = Path(out_dir)
    found: dict[str, Any] = {}
    # Every file is read and checked before anything is written.
    heads = _reference_heads(release, found)
    base = release.models.get("encoder")
    model = None
    if base is not None:
        model = SleepFMReference(config_from_reference(base.config, source=str(base.path)))
        model.load_state_dict(checkpoint_filter_fn(base.state_dict, model, source=str(base.path)))
    elif heads and not (out / "encoder" / "config.json").is_file():
        raise StoreError(f"{src} holds the released heads but not the encoder they read "
                         f"(model_base/best.pt), and there is none in {out / 'encoder'} yet; "
                         "import the whole checkpoints/ folder.")
    table = _reference_channels(release.channel_groups, src)
    out.mkdir(parents=True, exist_ok=True)
    imported: dict[str, Any] = {}
    if model is not None:
        save_encoder(model.eval(), out / "encoder", metadata={"source": _provenance(base)})
        imported["encoder"] = _provenance(base)
    if (out / "encoder" / "config.json").is_file():
        record = read_record(out / "encoder", kind="encoder")
        if record.get("architecture") != "SleepFMReference":
            raise StoreError(f"{out / 'encoder'} holds a {record.get('architecture')} encoder, "
                             "not SleepFM's released one the heads read; import into an empty "
                             "folder, or with the whole checkpoints/ folder.")
        imported.setdefault("encoder", {})["id"] = artifact_id(record)
    for part, net in heads.items():
        source = _provenance(release.models[part])
        save_heads(out / part, {part: net}, {"task": part, "mode": "reference", "source": source,
                                             "encoder_id": imported["encoder"]["id"]})
        imported[part] = source
    if table is not None:
        write_text_atomic(out / PUBLISHED_CHANNEL_MAP, yaml.safe_dump(
            {"aliases": dict(sorted(table.aliases.items()))}, allow_unicode=True))
        found["channel_table"] = {"file": release.channel_groups.name,
                                  "new_aliases": len(table.aliases), "known": table.known,
                                  "disagreements": {k: list(v) for k, v in
                                                    table.disagreements.items()}}
    manifest = {"source": "sleepfm-clinical", "licence": SLEEPFM_CLINICAL_LICENCE,
                "models": imported, **found}
    write_text_atomic(out / PUBLISHED_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    logger.info("imported SleepFM's %s from %s to %s", ", ".join(imported), src, out)
    return out
