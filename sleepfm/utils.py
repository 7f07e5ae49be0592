"""Small helpers shared by the package: argument checks, atomic writes, JSON values, logging scope."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .exceptions import InvalidParameterError, StoreError

logger = logging.getLogger("sleepfm")


def check_option(name: str, value, allowed: Iterable) -> None:
    """Raise :class:`InvalidParameterError` naming the parameter, the allowed values and the value."""
    allowed = list(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise InvalidParameterError(
            f"Invalid value for the {name!r} parameter. Allowed values are {listed}, "
            f"but got {value!r} instead."
        )


def check_type(name: str, value, types: type | tuple[type, ...]) -> None:
    """Raise ``TypeError`` when ``value`` is not an instance of ``types``."""
    if not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise TypeError(f"{name!r} must be {names}, got {type(value).__name__} instead.")


def _temporary(path: Path, *, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{path.name}.", ".tmp"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or exception leaves ``path`` untouched (either the old file or nothing) and removes
    the temporary file.
    """
    path = Path(path)
    tmp = _temporary(path, directory=False)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike,
                     may_replace: Callable[[Path], bool] = lambda d: False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; swap it onto ``path`` if the block succeeds.

    An existing ``path`` is replaced only when it is empty or ``may_replace(path)`` is true (e.g.
    it holds an earlier version of the same artefact); otherwise :class:`StoreError` is raised
    before anything is written. A failure anywhere leaves the old directory as it was.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file; pass a directory path.")
    if path.is_dir() and any(path.iterdir()) and not may_replace(path):
        other = sorted(p.name for p in path.iterdir())
        raise StoreError(f"{path} holds files that are not part of a sleepfm artefact "
                         f"({', '.join(other[:5])}); refusing to replace it. Save to a new or "
                         "empty directory.")
    tmp = _temporary(path, directory=True)
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
            return
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old.tmp")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: arrays and tuples become lists, NumPy scalars Python ones,
    paths strings, and NaN or infinity ``None``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` (see :func:`to_jsonable`) as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(to_jsonable(value), indent=2) + "\n")


def fingerprint(*parts) -> str:
    """A short id (16 hex digits) of JSON-able ``parts``: equal parts, equal fingerprint."""
    text = json.dumps(to_jsonable(list(parts)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def verbose_scope(verbose: bool | str | int | None) -> Iterator[None]:
    """Set the ``sleepfm`` logger level for the duration of one call (MNE-style ``verbose``)."""
    if verbose is None:
        yield
        return
    if isinstance(verbose, bool):
        level = logging.INFO if verbose else logging.WARNING
    else:
        level = logging.getLevelName(verbose.upper()) if isinstance(verbose, str) else int(verbose)
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def progress_bar(total: int, desc: str, unit: str, enabled: bool) -> tqdm:
    """A progress bar for a stage (a silent one when ``enabled`` is false)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
