"""Type checks for config values read from YAML, shared by the system and fusion configs.

YAML gives `epochs: ten` as a string; a dataclass would accept it and fail later inside a
comparison with a traceback. Checking the simple field types first turns that into one line
naming the key.
"""
from __future__ import annotations

import types
import typing

from core.errors import fail


def type_ok(value, hint) -> bool:
    """Whether a YAML value fits a simple field type (int, float, bool, str, optional ones, tuples
    and lists of them); other containers are left to the class."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in args)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else typing.Any
        return all(type_ok(v, inner) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def check_types(cls, values: dict, where: str) -> None:
    """A KitError naming `where.key` for the first value that does not fit its field's type."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not type_ok(value, hints[key]):
            name = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            fail(f"{where}.{key}: {value!r} is not a valid {name}")
