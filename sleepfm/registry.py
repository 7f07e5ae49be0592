"""Registries by name for encoders, pre-training objectives and heads (timm-style)."""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Iterator, TypeVar

from .exceptions import InvalidParameterError, SleepFMError

T = TypeVar("T", bound=Callable)


class Registry:
    """Named constructors of one family, with ``register`` / ``names`` / ``create``.

    Parameters
    ----------
    kind : str
        What the entries are ("encoder", "objective", "head"), for messages.
    attribute : str, optional
        If given, ``register`` sets this attribute of a registered class to its name.
    """

    def __init__(self, kind: str, *, attribute: str | None = None):
        self.kind = kind
        self.attribute = attribute
        self._items: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a class or factory function under ``name``."""

        def decorate(obj: T) -> T:
            if name in self._items:
                raise SleepFMError(f"An {self.kind} named {name!r} is already registered.")
            if self.attribute:
                setattr(obj, self.attribute, name)
            self._items[name] = obj
            return obj

        return decorate

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the shell-style ``pattern``."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def create(self, name: str, **kwargs: Any):
        """Build the entry ``name`` with keyword options; an unknown name lists the known ones,
        options it does not take or of the wrong type are an :class:`InvalidParameterError`."""
        build = self[name]
        try:
            return build(**kwargs)
        except TypeError as err:
            raise InvalidParameterError(f"{self.kind} {name!r}: invalid options {kwargs} "
                                        f"({err}).") from None

    def __getitem__(self, name: str) -> Callable:
        if name not in self._items:
            raise InvalidParameterError(f"Unknown {self.kind} {name!r}. Known {self.kind}s: "
                                        f"{', '.join(self.names())}.")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
