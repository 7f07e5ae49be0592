"""Small helpers shared by the package: argument checks, atomic writes, logging scope."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

logger = logging.getLogger("sleepfm")


def check_option(name: str, value, allowed: Iterable) -> None:
    """Raise ``ValueError`` naming the parameter, the allowed values and the value given."""
    allowed = list(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(
            f"Invalid value for the {name!r} parameter. Allowed values are {listed}, "
            f"but got {value!r} instead."
        )


def check_type(name: str, value, types: type | tuple[type, ...]) -> None:
    """Raise ``TypeError`` when ``value`` is not an instance of ``types``."""
    if not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise TypeError(f"{name!r} must be {names}, got {type(value).__name__} instead.")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or exception leaves ``path`` untouched (either the old file or nothing) and removes
    the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
