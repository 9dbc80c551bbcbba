"""Validation and deterministic msgpack helpers shared by the core value types.

Every function here raises :class:`~converge.errors.DecodeError` (a ``ValueError``)
naming the offending field; no msgpack exception escapes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, TypeVar

import msgpack

from converge.errors import DecodeError

__all__ = [
    "MAX_DEPTH",
    "check_bool",
    "check_bytes",
    "check_float",
    "check_int",
    "check_mapping",
    "check_number",
    "check_optional_number",
    "check_optional_str",
    "check_str",
    "check_str_list",
    "check_value",
    "packb",
    "require",
    "unpackb",
]

MAX_DEPTH = 64
"""Deepest nesting of lists and dicts accepted in payloads, results and attributes."""

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

T = TypeVar("T")


def _type_name(value: object) -> str:
    return type(value).__name__


class _NotPlain(Exception):
    """Raised by :func:`_plain` for anything its fast path does not accept as is."""


_SCALARS = frozenset({type(None), bool, str, float})
_FIRST = operator.itemgetter(0)


def _plain(value: object, depth: int) -> Any:
    """:func:`check_value` for exact builtin types, without building paths for messages.

    Raises ``_NotPlain`` for anything else (subclasses, other containers, bad values),
    and :func:`check_value` then walks the value again the careful way.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
            return value
        raise _NotPlain
    if depth >= MAX_DEPTH:
        raise _NotPlain
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise _NotPlain
            out[key] = item if type(item) in _SCALARS else _plain(item, depth + 1)
        return out
    if kind is list or kind is tuple:
        return [
            item if type(item) in _SCALARS else _plain(item, depth + 1)
            for item in value  # type: ignore[attr-defined]
        ]
    if kind is bytes:
        return value
    raise _NotPlain


def check_value(value: object, where: str, *, depth: int = 0) -> Any:
    """Return ``value`` normalised to msgpack-safe plain data (tuples become lists).

    Accepts ``None``, bool, int (64-bit), float, str, bytes, lists/tuples and dicts
    with ``str`` keys. Raises ``DecodeError`` naming the path of the first bad value.
    Plain builtin data takes a fast path that builds no path strings.
    """
    if depth <= MAX_DEPTH:
        try:
            return _plain(value, depth)
        except _NotPlain:
            pass
    return _check_value(value, where, depth=depth)


def _check_value(value: object, where: str, *, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise DecodeError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise DecodeError(f"{where} is an integer outside the 64-bit range: {value}")
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, msgpack.ExtType):
        raise DecodeError(f"{where} is a msgpack ExtType (code {value.code}), which is not allowed")
    if isinstance(value, list | tuple):
        return [
            _check_value(item, f"{where}[{i}]", depth=depth + 1) for i, item in enumerate(value)
        ]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"{where} has a non-string key {key!r} ({_type_name(key)})")
            out[key] = _check_value(item, f"{where}[{key!r}]", depth=depth + 1)
        return out
    raise DecodeError(
        f"{where} holds a {_type_name(value)}, which cannot be encoded; "
        "use None, bool, int, float, str, bytes, lists or dicts with str keys"
    )


def check_mapping(value: object, where: str) -> dict[str, Any]:
    """Return ``value`` as a validated plain dict with ``str`` keys; raise ``DecodeError``."""
    if not isinstance(value, Mapping):
        raise DecodeError(f"{where} must be a dict, got {_type_name(value)}")
    result: dict[str, Any] = check_value(value, where)
    return result


def check_str(value: object, where: str, *, allow_empty: bool = True) -> str:
    """Return ``value`` if it is a str (non-empty unless ``allow_empty``); raise ``DecodeError``."""
    if not isinstance(value, str):
        raise DecodeError(f"{where} must be a str, got {_type_name(value)}")
    if not allow_empty and not value:
        raise DecodeError(f"{where} must not be empty")
    return value


def check_optional_str(value: object, where: str) -> str | None:
    """Return ``value`` if it is a str or ``None``; raise ``DecodeError``."""
    return None if value is None else check_str(value, where)


def check_bool(value: object, where: str) -> bool:
    """Return ``value`` if it is a bool; raise ``DecodeError``."""
    if not isinstance(value, bool):
        raise DecodeError(f"{where} must be a bool, got {_type_name(value)}")
    return value


def check_int(value: object, where: str, *, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not bool) at least ``minimum``; raise ``DecodeError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{where} must be an int, got {_type_name(value)}")
    if minimum is not None and value < minimum:
        raise DecodeError(f"{where} must be >= {minimum}, got {value}")
    return value


def check_number(value: object, where: str, *, minimum: float | None = None) -> float:
    """Return ``value`` if it is a finite int or float (not bool); raise ``DecodeError``.

    Ints are returned unchanged so that encodings stay byte-for-byte stable.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{where} must be a number, got {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError(f"{where} must be a finite number, got {value}")
    if isinstance(value, int):
        check_value(value, where)
    if minimum is not None and value < minimum:
        raise DecodeError(f"{where} must be >= {minimum}, got {value}")
    return value


def check_float(value: object, where: str) -> float:
    """Return ``value`` as a number like :func:`check_number`."""
    return check_number(value, where)


def check_optional_number(value: object, where: str) -> float | None:
    """Return ``value`` if it is a finite number or ``None``; raise ``DecodeError``."""
    return None if value is None else check_number(value, where)


def check_bytes(value: object, where: str) -> bytes:
    """Return ``value`` as bytes (bytes, bytearray or memoryview); raise ``DecodeError``."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise DecodeError(f"{where} must be bytes, got {_type_name(value)}")
    return bytes(value)


def check_str_list(value: object, where: str) -> list[str]:
    """Return ``value`` (list, tuple, set or frozenset of str) as a list; raise ``DecodeError``."""
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise DecodeError(f"{where} must be a list of str, got {_type_name(value)}")
    items = sorted(value) if isinstance(value, set | frozenset) else list(value)
    return [check_str(item, f"{where}[{i}]") for i, item in enumerate(items)]


def require(data: Mapping[str, Any], key: str, owner: str) -> Any:
    """Return ``data[key]``; raise ``DecodeError`` naming ``owner`` and the key if absent."""
    if key not in data:
        raise DecodeError(f"{owner} is missing the required field {key!r}")
    return data[key]


def canonical(value: Any) -> Any:
    """Return ``value`` with every dict's keys sorted, recursively (tuples become lists)."""
    kind = type(value)
    if kind in _SCALARS or kind is int or kind is bytes:
        return value
    if isinstance(value, Mapping):
        return {
            k: v if type(v) in _SCALARS else canonical(v)
            for k, v in sorted(value.items(), key=_FIRST)
        }
    if isinstance(value, list | tuple):
        return [v if type(v) in _SCALARS else canonical(v) for v in value]
    return value


def packb(value: Any) -> bytes:
    """Encode plain data as deterministic msgpack (sorted dict keys, bin type for bytes)."""
    data = msgpack.packb(canonical(value), use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def unpackb(data: object, *, max_size: int, what: str) -> Any:
    """Decode msgpack ``data`` of at most ``max_size`` bytes into plain data.

    Raises ``DecodeError`` for non-bytes input, oversize input, truncated or malformed
    msgpack, trailing bytes, extension types and non-string map keys.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"Invalid {what} bytes: expected bytes, got {_type_name(data)}")
    size = len(data)
    if size > max_size:
        raise DecodeError(
            f"Invalid {what} bytes: {size} bytes exceeds the limit of {max_size} bytes"
        )
    if size == 0:
        raise DecodeError(f"Invalid {what} bytes: empty input")
    try:
        value = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, timestamp=0)
    except Exception as exc:  # msgpack raises many unrelated types; translate them all once
        raise DecodeError(f"Invalid {what} bytes: {type(exc).__name__}: {exc}") from exc
    return check_value(value, what)
