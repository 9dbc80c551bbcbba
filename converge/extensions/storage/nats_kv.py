"""An :class:`~converge.core.store.AsyncStore` on a NATS JetStream key-value bucket.

Keys are encoded into valid KV keys: ASCII letters, digits, ``-``, ``_`` and ``/``
stay as they are, every other character (``.`` and ``=`` included) becomes ``=XX``
per UTF-8 byte. Values are stored as they are. ``delete`` writes the standard KV
delete marker, so other KV clients (``nats kv``) see the same contents.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import string
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.js.api import StorageType

from converge.core.store import AsyncStore, check_key, check_prefix, check_value, decode_value
from converge.errors import (
    ClosedError,
    ConfigError,
    ConvergeError,
    ConvergeTimeoutError,
    TransportError,
)
from events.connection import BrokerConfig, NatsClient, connect_nats

__all__ = ["NatsKVStore", "decode_kv_key", "encode_kv_key"]

logger = logging.getLogger(__name__)

_SAFE = frozenset(string.ascii_letters + string.digits + "-_/")
_ESCAPE = re.compile(r"=([0-9A-F]{2})")
_BUCKET_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


def encode_kv_key(key: str) -> str:
    """Return the NATS KV encoding of ``key`` (prefix-preserving, injective)."""
    out: list[str] = []
    for ch in check_key(key):
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode_kv_key(encoded: str) -> str | None:
    """Return the key encoded as ``encoded``, or ``None`` if it is no canonical encoding."""
    try:
        raw = bytearray()
        pos = 0
        while pos < len(encoded):
            if encoded[pos] == "=":
                match = _ESCAPE.match(encoded, pos)
                if match is None:
                    return None
                raw.append(int(match.group(1), 16))
                pos = match.end()
            else:
                raw.extend(encoded[pos].encode("utf-8"))
                pos += 1
        key = raw.decode("utf-8")
        return key if encode_kv_key(key) == encoded else None
    except (UnicodeDecodeError, ValueError):
        return None


class _State(StrEnum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class NatsKVStore(AsyncStore):
    """Keep values in the JetStream KV bucket ``bucket``.

    Give an open nats-py ``client`` (the store does not close it), or ``servers`` /
    a :class:`~events.connection.BrokerConfig` (the store connects on ``start()`` and
    closes on ``stop()``); :meth:`connect` does the latter and starts. ``start()``
    binds the bucket, creating it when missing with ``history``, ``ttl_sec``,
    ``replicas``, ``storage`` ("file" or "memory") and ``max_value_size`` (bytes,
    -1 unlimited). A method on a store that was not started starts it first; after
    ``stop()`` it raises ``ClosedError``. Each request waits at most ``timeout_sec``
    (``list`` at most ``list_timeout_sec``), then raises ``ConvergeTimeoutError``;
    broker failures raise ``TransportError`` naming the bucket and the key.
    ``put_if_absent`` relies on the broker's per-key sequence check, so it is atomic
    across processes.
    """

    def __init__(
        self,
        client: NatsClient | None = None,
        *,
        servers: str | builtins.list[str] | BrokerConfig | None = None,
        bucket: str = "converge",
        history: int = 1,
        ttl_sec: float | None = None,
        replicas: int = 1,
        storage: str = "file",
        max_value_size: int = -1,
        timeout_sec: float = 5.0,
        list_timeout_sec: float = 30.0,
    ) -> None:
        if (client is None) == (servers is None):
            raise ConfigError("NatsKVStore needs exactly one of client= or servers=")
        if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket):
            raise ConfigError(
                f"NatsKVStore bucket {bucket!r} is invalid; use letters, digits, '-' and '_'"
            )
        if not 1 <= history <= 64:
            raise ConfigError(f"NatsKVStore history must be 1..64, got {history!r}")
        if storage not in ("file", "memory"):
            raise ConfigError(f"NatsKVStore storage must be 'file' or 'memory', got {storage!r}")
        if timeout_sec <= 0 or list_timeout_sec <= 0:
            raise ConfigError("NatsKVStore timeout_sec and list_timeout_sec must be > 0")
        if ttl_sec is not None and ttl_sec <= 0:
            raise ConfigError(f"NatsKVStore ttl_sec must be > 0 or None, got {ttl_sec!r}")
        self.bucket = bucket
        self.history = history
        self.ttl_sec = ttl_sec
        self.replicas = replicas
        self.storage = storage
        self.max_value_size = max_value_size
        self.timeout_sec = timeout_sec
        self.list_timeout_sec = list_timeout_sec
        self._client = client
        self._config: BrokerConfig | None = None
        if servers is not None:
            self._config = (
                servers if isinstance(servers, BrokerConfig) else BrokerConfig(servers=servers)  # type: ignore[arg-type]
            )
        self._owns_client = client is None
        self._kv: Any = None
        self._state = _State.NEW
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        servers: str | builtins.list[str] | BrokerConfig,
        *,
        bucket: str = "converge",
        **options: Any,
    ) -> Self:
        """Connect to ``servers``, bind (or create) ``bucket`` and return the started store.

        ``options`` are the keyword arguments of the constructor. Raises
        ``EventLogError`` when the broker is unreachable, ``ConfigError`` for bad settings.
        """
        store = cls(servers=servers, bucket=bucket, **options)
        await store.start()
        return store

    def __repr__(self) -> str:
        return f"NatsKVStore(bucket={self.bucket!r}, state={self._state.value!r})"

    @property
    def is_started(self) -> bool:
        """Whether the store is started and not stopped."""
        return self._state is _State.STARTED

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect (when owning the connection) and bind or create the bucket.

        Idempotent while started; raises ``ClosedError`` after ``stop()``.
        """
        async with self._lock:
            if self._state is _State.STARTED:
                return
            if self._state is _State.STOPPED:
                raise ClosedError(f"NatsKVStore {self.bucket!r} was stopped; make a new one")
            if self._client is None:
                assert self._config is not None
                self._client = await connect_nats(self._config)
            try:
                self._kv = await self._bind()
            except BaseException:
                if self._owns_client:
                    await self._close_client()
                raise
            self._state = _State.STARTED
            logger.info("NatsKVStore bound bucket %s", self.bucket)

    async def _bind(self) -> Any:
        assert self._client is not None
        js = self._client.jetstream(timeout=self.timeout_sec)
        with self._mapped("bind bucket", None):
            try:
                return await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                pass
            return await js.create_key_value(
                bucket=self.bucket,
                history=self.history,
                ttl=self.ttl_sec,
                replicas=self.replicas,
                storage=StorageType.FILE if self.storage == "file" else StorageType.MEMORY,
                max_value_size=self.max_value_size,
            )

    async def stop(self) -> None:
        """Stop the store; closes the connection only when the store opened it. Idempotent."""
        async with self._lock:
            if self._state is _State.STOPPED:
                return
            self._state = _State.STOPPED
            self._kv = None
            if self._owns_client:
                await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            try:
                await asyncio.wait_for(client.close(), timeout=self.timeout_sec)
            except (TimeoutError, nats.errors.Error) as exc:
                logger.warning(
                    "NatsKVStore %s: closing the connection failed: %s", self.bucket, exc
                )

    async def _ready(self) -> Any:
        if self._state is not _State.STARTED:
            await self.start()
        kv = self._kv
        if kv is None:  # stopped concurrently
            raise ClosedError(f"NatsKVStore {self.bucket!r} was stopped; make a new one")
        return kv

    @contextlib.contextmanager
    def _mapped(self, op: str, key: str | None, timeout_sec: float | None = None) -> Iterator[None]:
        where = f"NatsKVStore bucket {self.bucket!r}: {op}" + ("" if key is None else f" {key!r}")
        try:
            yield
        except ConvergeError:
            raise
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            limit = self.timeout_sec if timeout_sec is None else timeout_sec
            raise ConvergeTimeoutError(f"{where} timed out after {limit} s") from exc
        except nats.errors.Error as exc:
            raise TransportError(f"{where} failed: {exc}") from exc

    # -- AsyncStore --------------------------------------------------------------

    async def put(self, key: str, value: object) -> None:
        key = check_key(key)
        data = check_value(value, key)
        kv = await self._ready()
        with self._mapped("put", key):
            await kv.put(encode_kv_key(key), data)

    async def get(self, key: str) -> Any:
        key = check_key(key)
        kv = await self._ready()
        with self._mapped("get", key):
            try:
                entry = await kv.get(encode_kv_key(key))
            except nats.js.errors.KeyNotFoundError:
                return None
        return decode_value(b"" if entry.value is None else bytes(entry.value), key)

    async def delete(self, key: str) -> None:
        key = check_key(key)
        kv = await self._ready()
        with self._mapped("delete", key):
            await kv.delete(encode_kv_key(key))

    async def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = check_prefix(prefix)
        kv = await self._ready()
        with self._mapped("list", prefix, self.list_timeout_sec):
            try:
                async with asyncio.timeout(self.list_timeout_sec):
                    encoded = await kv.keys()
            except nats.js.errors.NoKeysError:
                return []
        keys: builtins.list[str] = []
        for name in encoded:
            key = decode_kv_key(name)
            if key is None:
                logger.debug("NatsKVStore %s: ignoring foreign key %s", self.bucket, name)
            elif key.startswith(prefix):
                keys.append(key)
        keys.sort()
        return keys

    async def put_if_absent(self, key: str, value: object) -> bool:
        key = check_key(key)
        data = check_value(value, key)
        kv = await self._ready()
        with self._mapped("put_if_absent", key):
            try:
                await kv.create(encode_kv_key(key), data)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
        return True
