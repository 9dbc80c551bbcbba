"""An :class:`~converge.core.store.AsyncStore` on a NATS JetStream key-value bucket.

Keys are encoded into valid KV keys: ASCII letters, digits, ``-``, ``_`` and ``/``
stay as they are, every other character (``.`` and ``=`` included) becomes ``=XX``
per UTF-8 byte. Values are stored as they are. ``delete`` writes the standard KV
delete marker, so other KV clients (``nats kv``) see the same contents.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import string
from enum import StrEnum
from typing import Any, Literal, Self, cast

from converge.core.store import AsyncStore, check_key, check_prefix, check_value, decode_value
from converge.errors import ClosedError, ConfigError
from events.connection import BrokerConfig, NatsClient, connect_nats
from events.jetstream.kv import KVBucket, close_connection

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
    across processes. To share an event log's connection, give
    ``JetStreamEventLog.connection`` as ``client``. The bucket operations themselves
    live in the JetStream backend (:class:`events.jetstream.kv.KVBucket`).
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
        self._kv: KVBucket | None = None
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

    async def _bind(self) -> KVBucket:
        assert self._client is not None
        return await KVBucket.bind(
            self._client,
            bucket=self.bucket,
            history=self.history,
            ttl_sec=self.ttl_sec,
            replicas=self.replicas,
            storage=cast(Literal["file", "memory"], self.storage),
            max_value_size=self.max_value_size,
            timeout_sec=self.timeout_sec,
            label="NatsKVStore",
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
        if client is not None:
            problem = await close_connection(client, self.timeout_sec)
            if problem is not None:
                logger.warning(
                    "NatsKVStore %s: closing the connection failed: %s", self.bucket, problem
                )

    async def _ready(self) -> KVBucket:
        if self._state is not _State.STARTED:
            await self.start()
        kv = self._kv
        if kv is None:  # stopped concurrently
            raise ClosedError(f"NatsKVStore {self.bucket!r} was stopped; make a new one")
        return kv

    # -- AsyncStore --------------------------------------------------------------

    async def put(self, key: str, value: object) -> None:
        key = check_key(key)
        data = check_value(value, key)
        kv = await self._ready()
        await kv.put(encode_kv_key(key), data, shown=key)

    async def get(self, key: str) -> Any:
        key = check_key(key)
        kv = await self._ready()
        raw = await kv.get(encode_kv_key(key), shown=key)
        return None if raw is None else decode_value(raw, key)

    async def delete(self, key: str) -> None:
        key = check_key(key)
        kv = await self._ready()
        await kv.delete(encode_kv_key(key), shown=key)

    async def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = check_prefix(prefix)
        kv = await self._ready()
        encoded = await kv.keys(timeout_sec=self.list_timeout_sec, shown=prefix)
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
        return await kv.create(encode_kv_key(key), data, shown=key)
