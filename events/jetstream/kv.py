"""JetStream key-value buckets on a backend connection, with nats-py errors mapped to converge's.

The storage extension's ``NatsKVStore`` keeps its values here, so nats-py stays
inside the JetStream backend. Keys given to :class:`KVBucket` are already valid KV
keys. Every request waits at most its timeout, then raises
:class:`~converge.errors.ConvergeTimeoutError`; broker failures raise
:class:`~converge.errors.TransportError` naming the bucket, the operation and the key.

Listing keys does not use nats-py's ``KeyValue.keys()``: its watcher decides that the
initial replay is over by comparing the consumer's ``num_pending`` with the messages
the client has read so far, and when the broker sends the consumer-info reply before
the deliveries already counted as sent (a loaded machine), it ends the replay at once
and a bucket with keys lists as empty. Each call also left its consumer on the broker
for five minutes. :meth:`KVBucket.keys` instead creates a pull consumer, whose
``num_pending`` at creation is exact because nothing is delivered before the first
fetch, reads until that many entries came and the broker reports none pending, and
deletes the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from converge.errors import ConvergeError, ConvergeTimeoutError, TransportError
from events.jetstream.client import NatsClient

__all__ = ["KVBucket", "close_connection", "read_bucket"]

_LIST_BATCH = 256
_LIST_PROBE_SEC = 0.5
"""How long a listing waits for entries the broker counted at the start but no longer has."""
_REMOVED_OPS = frozenset({"DEL", "PURGE"})


class KVBucket:
    """One JetStream key-value bucket; build it with :meth:`bind`."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        name: str,
        label: str,
        timeout_sec: float,
        js: JetStreamContext,
    ) -> None:
        self._kv = kv
        self._js = js
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
        return cls(kv, name=bucket, label=label, timeout_sec=timeout_sec, js=js)

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
        """Return every key of the bucket (``[]`` when empty), waiting at most ``timeout_sec``.

        Every key stored before the call is listed; one written or deleted meanwhile may
        or may not be.
        """
        with _mapped(self._where("list", shown), timeout_sec):
            async with asyncio.timeout(timeout_sec):
                return await self._scan_keys(timeout_sec)

    async def _scan_keys(self, timeout_sec: float) -> list[str]:
        js = self._js
        stream, prefix = f"KV_{self.name}", f"$KV.{self.name}."
        info = await js.add_consumer(
            stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                headers_only=True,
                filter_subject=f"{prefix}>",
                mem_storage=True,
                # The broker removes it on its own should this process die mid-listing.
                inactive_threshold=max(timeout_sec, 5.0),
            ),
        )
        try:
            expected = info.num_pending or 0
            if expected == 0:
                return []
            sub = await js.pull_subscribe_bind(consumer=info.name, stream=stream)
            try:
                return await _read_keys(sub, expected, prefix, timeout_sec)
            finally:
                await sub.unsubscribe()
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js.delete_consumer(stream, info.name)


async def _read_keys(
    sub: JetStreamContext.PullSubscription, expected: int, prefix: str, timeout_sec: float
) -> list[str]:
    """Read a fresh last-per-subject consumer that had ``expected`` entries pending."""
    keys: dict[str, None] = {}  # a key rewritten during the listing comes twice
    seen = 0
    drained = False  # the broker said none pending, yet fewer than expected came
    while True:
        try:
            msgs = await sub.fetch(
                batch=min(max(expected - seen, 1), _LIST_BATCH),
                timeout=_LIST_PROBE_SEC if drained else timeout_sec,
            )
        except (TimeoutError, nats.errors.TimeoutError):
            if drained:  # entries counted at the start were deleted or expired since
                return list(keys)
            raise
        pending = -1
        for msg in msgs:
            seen += 1
            pending = msg.metadata.num_pending
            if not _removed(msg):
                keys[msg.subject[len(prefix) :]] = None
        if pending == 0:
            if seen >= expected:
                return list(keys)
            drained = True


def _removed(msg: Msg) -> bool:
    """Whether ``msg`` is a delete or purge marker rather than a value."""
    headers = msg.headers or {}
    return headers.get("KV-Operation") in _REMOVED_OPS or "Nats-Marker-Reason" in headers


async def read_bucket(nc: NatsClient, bucket: str, *, timeout_sec: float = 5.0) -> dict[str, bytes]:
    """Every live key of ``bucket`` and its value; ``{}`` when the bucket does not exist.

    Creates nothing on the broker (no bucket, no consumer): the keys come from the
    stream's per-subject counts, the values from plain gets.
    """
    js = nc.jetstream(timeout=timeout_sec)
    prefix = f"$KV.{bucket}."
    with _mapped(f"KV bucket {bucket!r}: read", timeout_sec):
        try:
            info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
            kv = await js.key_value(bucket)
        except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
            return {}
        out: dict[str, bytes] = {}
        for subject in sorted(info.state.subjects or {}):
            try:
                entry = await kv.get(subject[len(prefix) :])
            except nats.js.errors.KeyNotFoundError:  # deleted or expired
                continue
            out[subject[len(prefix) :]] = b"" if entry.value is None else bytes(entry.value)
    return out


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
