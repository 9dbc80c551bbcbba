"""Validation and deterministic msgpack helpers shared by the core value types.

Every function here raises :class:`~converge.errors.DecodeError` (a ``ValueError``)
naming the offending field; no msgpack exception escapes.
"""

from __future__ import annotations

import math
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


def check_value(value: object, where: str, *, depth: int = 0) -> Any:
    """Return ``value`` normalised to msgpack-safe plain data (tuples become lists).

    Accepts ``None``, bool, int (64-bit), float, str, bytes, lists/tuples and dicts
    with ``str`` keys. Raises ``DecodeError`` naming the path of the first bad value.
    """
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
        return [check_value(item, f"{where}[{i}]", depth=depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"{where} has a non-string key {key!r} ({_type_name(key)})")
            out[key] = check_value(item, f"{where}[{key!r}]", depth=depth + 1)
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
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
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
