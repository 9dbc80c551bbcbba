"""JetStream key-value buckets on a backend connection, with nats-py errors mapped to converge's.

The storage extension's ``NatsKVStore`` keeps its values here, so nats-py stays
inside the JetStream backend. Keys given to :class:`KVBucket` are already valid KV
keys. Every request waits at most its timeout, then raises
:class:`~converge.errors.ConvergeTimeoutError`; broker failures raise
:class:`~converge.errors.TransportError` naming the bucket, the operation and the key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Literal

import nats.errors
import nats.js.errors
from nats.js.api import StorageType
from nats.js.kv import KeyValue

from converge.errors import ConvergeError, ConvergeTimeoutError, TransportError
from events.jetstream.client import NatsClient

__all__ = ["KVBucket", "close_connection"]


class KVBucket:
    """One JetStream key-value bucket; build it with :meth:`bind`."""

    def __init__(self, kv: KeyValue, *, name: str, label: str, timeout_sec: float) -> None:
        self._kv = kv
        self.name = name
        self._label = label
        self.timeout_sec = timeout_sec

    @classmethod
    async def bind(
        cls,
        nc: NatsClient,
        *,
        bucket: str,
        history: int = 1,
        ttl_sec: float | None = None,
        replicas: int = 1,
        storage: Literal["file", "memory"] = "file",
        max_value_size: int = -1,
        timeout_sec: float = 5.0,
        label: str = "KV",
    ) -> KVBucket:
        """Bind ``bucket`` on ``nc``, creating it with these settings when it is missing.

        ``label`` names the user of the bucket in error messages.
        """
        where = f"{label} bucket {bucket!r}: bind bucket"
        js = nc.jetstream(timeout=timeout_sec)
        with _mapped(where, timeout_sec):
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=bucket,
                    history=history,
                    ttl=ttl_sec,
                    replicas=replicas,
                    storage=StorageType.FILE if storage == "file" else StorageType.MEMORY,
                    max_value_size=max_value_size,
                )
        return cls(kv, name=bucket, label=label, timeout_sec=timeout_sec)

    def _where(self, op: str, key: str | None) -> str:
        return f"{self._label} bucket {self.name!r}: {op}" + ("" if key is None else f" {key!r}")

    async def get(self, key: str, *, shown: str | None = None) -> bytes | None:
        """Return the value of ``key`` (``None`` when missing or deleted).

        ``shown`` is the key as errors name it (default: ``key``).
        """
        with _mapped(self._where("get", shown or key), self.timeout_sec):
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
        return b"" if entry.value is None else bytes(entry.value)

    async def put(self, key: str, value: bytes, *, shown: str | None = None) -> None:
        """Store ``value`` under ``key``."""
        with _mapped(self._where("put", shown or key), self.timeout_sec):
            await self._kv.put(key, value)

    async def delete(self, key: str, *, shown: str | None = None) -> None:
        """Write the standard KV delete marker for ``key``."""
        with _mapped(self._where("delete", shown or key), self.timeout_sec):
            await self._kv.delete(key)

    async def create(self, key: str, value: bytes, *, shown: str | None = None) -> bool:
        """Store ``value`` only if ``key`` has none (atomic on the broker); whether it did."""
        with _mapped(self._where("put_if_absent", shown or key), self.timeout_sec):
            try:
                await self._kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
        return True

    async def keys(self, *, timeout_sec: float, shown: str | None = None) -> list[str]:
        """Return every key of the bucket (``[]`` when empty), waiting at most ``timeout_sec``."""
        with _mapped(self._where("list", shown), timeout_sec):
            try:
                async with asyncio.timeout(timeout_sec):
                    return list(await self._kv.keys())
            except nats.js.errors.NoKeysError:
                return []


@contextlib.contextmanager
def _mapped(where: str, timeout_sec: float) -> Iterator[None]:
    try:
        yield
    except ConvergeError:
        raise
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise ConvergeTimeoutError(f"{where} timed out after {timeout_sec} s") from exc
    except nats.errors.Error as exc:
        raise TransportError(f"{where} failed: {exc}") from exc


async def close_connection(nc: NatsClient, timeout_sec: float) -> str | None:
    """Close ``nc`` within ``timeout_sec``; return why it failed (``None`` when it closed)."""
    if nc.is_closed:
        return None
    try:
        await asyncio.wait_for(nc.close(), timeout=timeout_sec)
    except (TimeoutError, nats.errors.Error) as exc:
        return str(exc) or type(exc).__name__
    return None
