"""Key-value stores: the sync :class:`Store` ABC and its async twin :class:`AsyncStore`.

Stores hold snapshots, checkpoints and registrations. Keys are non-empty strings
(see :func:`check_key`); values are bytes or plain data (``None``, bools, numbers,
strings, bytes, lists and dicts of those), stored with a one-byte tag so ``get``
returns what ``put`` was given: bytes as bytes, plain data through msgpack (tuples
come back as lists). Anything else is refused with ``DecodeError``.
Backends live in :mod:`converge.extensions.storage`:
``MemoryStore``, ``FileStore`` (sync) and ``NatsKVStore`` (async, JetStream KV).
Every backend passes the contract suite in ``converge.extensions.storage.testing``.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar, Self

import msgpack

from converge.errors import ConfigError, DecodeError
from converge.lifecycle import AsyncService

__all__ = [
    "MAX_KEY_LENGTH",
    "AsyncStore",
    "Store",
    "SyncStoreAdapter",
    "as_async_store",
    "check_key",
    "check_prefix",
    "check_value",
    "decode_value",
]

MAX_KEY_LENGTH = 256
"""Longest key (in characters) every backend accepts."""


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid store key.

    A key is a non-empty ``str`` of at most :data:`MAX_KEY_LENGTH` characters, without
    control characters (``\\x00``-``\\x1f``, ``\\x7f``) or lone surrogates. Raises
    ``DecodeError`` naming the key and the rule it breaks.
    """
    if not isinstance(key, str):
        raise DecodeError(f"store key must be a str, got {type(key).__name__}")
    if not key:
        raise DecodeError("store key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise DecodeError(
            f"store key {key[:32]!r}... is {len(key)} characters; the limit is {MAX_KEY_LENGTH}"
        )
    for ch in key:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise DecodeError(f"store key {key!r} contains the control character {ch!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DecodeError(f"store key {key!r} is not valid Unicode text: {exc.reason}") from exc
    return key


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a ``str`` (may be empty); raise ``DecodeError`` otherwise."""
    if not isinstance(prefix, str):
        raise DecodeError(f"store prefix must be a str, got {type(prefix).__name__}")
    return prefix


_RAW = b"\x00"  # tag: the value is bytes, stored as is
_PACKED = b"\x01"  # tag: the value is plain data, msgpack-encoded


def check_value(value: object, key: str = "?") -> bytes:
    """Return ``value`` encoded for storage (a tag byte, then bytes or msgpack).

    Accepts bytes (also bytearray and memoryview) and plain data. Raises
    ``DecodeError`` naming ``key`` for anything msgpack cannot encode (sets, objects).
    """
    if isinstance(value, bytes):
        return _RAW + value
    if isinstance(value, bytearray | memoryview):
        return _RAW + bytes(value)
    try:
        return _PACKED + msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(
            f"store value for key {key!r} cannot be stored: {type(value).__name__} is not "
            f"bytes or plain data (None, bool, number, str, list, dict) ({exc})"
        ) from exc


def decode_value(data: bytes, key: str = "?") -> Any:
    """Return the value :func:`check_value` encoded into ``data``.

    Raises ``DecodeError`` naming ``key`` when ``data`` was not written by a converge store.
    """
    tag, body = data[:1], data[1:]
    if tag == _RAW:
        return bytes(body)
    if tag == _PACKED:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise DecodeError(f"store value for key {key!r} is corrupt: {exc}") from exc
    raise DecodeError(
        f"store value for key {key!r} was not written by a converge store (tag {tag!r})"
    )


class Store(ABC):
    """A synchronous key-value store of bytes and plain data.

    Guarantees every backend keeps: ``put`` replaces the whole value atomically (a
    reader sees the old or the new value, never a mix); ``put_if_absent`` stores only
    when the key has no value and tells whether it did, atomically with respect to
    other writers of the same store when ``atomic_put_if_absent`` is True (every
    bundled backend); ``list`` returns keys sorted. Bad keys or values
    raise ``DecodeError``; backend I/O failures raise ``OSError`` (file) or a
    ``ConvergeError`` naming the backend.
    """

    @abstractmethod
    def put(self, key: str, value: object) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""

    @abstractmethod
    def get(self, key: str) -> Any:
        """Return the value under ``key``, or ``None`` when there is none."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no-op when absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """Return the keys that start with ``prefix``, sorted."""

    atomic_put_if_absent: ClassVar[bool] = False
    """Whether ``put_if_absent`` is atomic against other writers (backends override)."""

    supports_locking: ClassVar[bool] = False
    """Whether the backend offers cross-process locks."""

    def put_if_absent(self, key: str, value: object) -> bool:
        """Store ``value`` only if ``key`` has no value; return whether it was stored.

        This default reads then writes, so it is not atomic; backends whose
        ``atomic_put_if_absent`` is True override it with an atomic operation.
        """
        if self.get(key) is not None:
            return False
        self.put(key, value)
        return True

    def close(self) -> None:  # noqa: B027  # optional hook, no-op by default
        """Release resources; the default does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncStore(AsyncService, ABC):
    """An asynchronous key-value store of bytes and plain data, with an explicit lifecycle.

    Same methods and guarantees as :class:`Store`, awaited. ``start()`` returns when
    the store is usable, ``stop()`` is idempotent, ``async with`` does both. A method
    called before ``start()`` starts the store first; after ``stop()`` it raises
    ``ClosedError`` (a ``NotStartedError``) when the backend holds resources.
    """

    async def start(self) -> None:  # optional hook, no-op by default
        """Make the store usable; the default does nothing."""

    async def stop(self) -> None:  # optional hook, no-op by default
        """Release resources (idempotent); the default does nothing."""

    @abstractmethod
    async def put(self, key: str, value: object) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""

    @abstractmethod
    async def get(self, key: str) -> Any:
        """Return the value under ``key``, or ``None`` when there is none."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``; no-op when absent."""

    @abstractmethod
    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Return the keys that start with ``prefix``, sorted."""

    @abstractmethod
    async def put_if_absent(self, key: str, value: object) -> bool:
        """Store ``value`` only if ``key`` has no value; return whether it was stored."""


class SyncStoreAdapter(AsyncStore):
    """Present a sync :class:`Store` as an :class:`AsyncStore` (calls run inline).

    ``stop()`` does not close the wrapped store; its owner does.
    """

    def __init__(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise ConfigError(f"SyncStoreAdapter wraps a Store, got {type(store).__name__}")
        self.store = store

    async def put(self, key: str, value: object) -> None:
        self.store.put(key, value)

    async def get(self, key: str) -> Any:
        return self.store.get(key)

    async def delete(self, key: str) -> None:
        self.store.delete(key)

    async def list(self, prefix: str = "") -> builtins.list[str]:
        return self.store.list(prefix)

    async def put_if_absent(self, key: str, value: object) -> bool:
        return self.store.put_if_absent(key, value)

    def __repr__(self) -> str:
        return f"SyncStoreAdapter({self.store!r})"


def as_async_store(store: Store | AsyncStore) -> AsyncStore:
    """Return ``store`` as an :class:`AsyncStore`, wrapping a sync one.

    Raises ``ConfigError`` for anything that is neither.
    """
    if isinstance(store, AsyncStore):
        return store
    if isinstance(store, Store):
        return SyncStoreAdapter(store)
    raise ConfigError(f"expected a Store or an AsyncStore, got {type(store).__name__}")
