"""The machinery of typed settings: fields with help, choices and bounds, checks of every value
when a settings dataclass is built, the YAML loader, and the command-line options of a dataclass.

The stages' settings themselves are in :mod:`sleepfm.config`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from .exceptions import InvalidParameterError
from .utils import check_option

__all__ = ["CLIOption", "Settings", "cli_options", "load_config", "parse_text", "setting"]


def setting(default=dataclasses.MISSING, help: str = "", *, choices=None, minimum=None,
            flag: str | None = None, const: tuple[str, Any, str] | None = None,
            default_factory=dataclasses.MISSING):
    """A config field with its help text, allowed values, lower bound and command-line flag.

    ``const`` adds a second flag that sets a fixed value, e.g.
    ``("--allow-truncated", "warn", "read truncated EDFs ...")``.
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "flag": flag,
                "const": const}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------------------------
# type checks
# --------------------------------------------------------------------------------------------
def _describe(hint) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a mapping", tuple: "a list", list: "a list"}
    return names.get(typing.get_origin(hint) or hint, str(hint))


def _check_value(name: str, value, hint):
    """``value`` checked against the type ``hint`` (ints are accepted as floats, lists as tuples)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return _check_value(name, value, option)
            except InvalidParameterError:
                continue
    elif hint is bool and isinstance(value, bool):
        return value
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is str and isinstance(value, str):
        return value
    elif (origin or hint) is dict and isinstance(value, Mapping):
        return dict(value)
    elif (origin or hint) in (tuple, list) and isinstance(value, (list, tuple)):
        return (origin or hint)(value)
    raise InvalidParameterError(f"{name} must be {_describe(hint)}, got {value!r}.")


def parse_text(name: str, text: str, hint):
    """A command-line string as a value of type ``hint`` (mappings and lists are read as YAML)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] \
        if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    if len(options) < len(typing.get_args(hint)) and text.lower() in ("none", "null"):
        return None
    for option in options:
        try:
            if option is int:
                return int(text)
            if option is float:
                return float(text)
            if option is str:
                return text
            value = yaml.safe_load(text)
            if option in (list, tuple) and not isinstance(value, (list, tuple)):
                value = [v.strip() for v in text.split(",") if v.strip()]  # a, b, c
            return _check_value(name, value, option)
        except (ValueError, yaml.YAMLError):
            continue
    raise InvalidParameterError(f"{name} must be {_describe(hint)}, got {text!r}.")


class Settings:
    """Base of the stage configs: every field is checked when the config is built."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _check_value(f.name, getattr(self, f.name), hints[f.name])
            if f.metadata.get("choices") is not None:
                check_option(f.name, value, f.metadata["choices"])
            low = f.metadata.get("minimum")
            if low is not None and value is not None and value < low:
                raise InvalidParameterError(f"{f.name} must be at least {low}, got {value!r}.")
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (what ``run.json`` records)."""
        return json.loads(json.dumps(asdict(self), default=str))


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise InvalidParameterError(f"{path}: config file not found; pass the path of a YAML "
                                    "file with the stage's settings.")
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InvalidParameterError(f"{path}: not valid YAML{line}; fix the file (settings are "
                                    "'name: value' lines).") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InvalidParameterError(f"{path}: expected 'name: value' settings, got a "
                                    f"{type(values).__name__}.")
    return values


def load_config(cls: type, source=None, /, **overrides):
    """A config dataclass from a YAML file, a dict or another config, plus keyword overrides.

    Parameters
    ----------
    cls : type
        One of the config dataclasses of this module.
    source : path-like, dict or ``cls`` instance, optional
        The settings; absent ones keep their defaults.
    **overrides
        Settings that replace those of ``source``.

    Returns
    -------
    cls instance

    Raises
    ------
    InvalidParameterError
        A missing or invalid YAML file, an unknown setting, a wrong type or a value that is not
        allowed; the message names the file and the setting.
    """
    where = ""
    if source is None:
        values = {}
    elif isinstance(source, cls):
        values = {f.name: getattr(source, f.name) for f in fields(cls)}
    elif isinstance(source, Mapping):
        values = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        where = f"{source}: "
        values = _read_yaml(Path(source))
    else:
        raise InvalidParameterError(f"settings must be a {cls.__name__}, a dict or a YAML path, "
                                    f"got {type(source).__name__}.")
    values.update(overrides)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidParameterError(f"{where}unknown settings {unknown}; known: {known}.")
    try:
        return cls(**values)
    except InvalidParameterError as err:
        raise InvalidParameterError(f"{where}{err}") from None


@dataclass(frozen=True)
class CLIOption:
    """How one config field appears on the command line."""

    dest: str
    flag: str
    help: str
    default: Any
    choices: tuple | None
    is_bool: bool
    parse: Callable[[str], Any]
    const: tuple[str, Any, str] | None


def cli_options(cls: type) -> list[CLIOption]:
    """The command-line options of a config dataclass, one per field."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(CLIOption(
            dest=f.name, flag=f.metadata.get("flag") or "--" + f.name.replace("_", "-"),
            help=f.metadata.get("help", ""), default=default, choices=f.metadata.get("choices"),
            is_bool=hints[f.name] is bool,
            parse=lambda text, name=f.name, hint=hints[f.name]: parse_text(name, text, hint),
            const=f.metadata.get("const")))
    return out
