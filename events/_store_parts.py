"""The parts of :mod:`events.store_log`: the store protocols, records and subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from converge.errors import ConcurrencyError, ConfigError
from events.log import Handler, Subscription
from events.subjects import kind_of, subject_matches, validate_filter, validate_kind

if TYPE_CHECKING:
    from events.store_log import StoreEventLog

__all__ = ["AsyncKeyValueStore", "KeyValueStore"]

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_SEC = 5.0


@runtime_checkable
class KeyValueStore(Protocol):
    """The part of a synchronous store the log uses (``converge.core.store.Store``)."""

    def get(self, key: str) -> Any:
        """Return the value under ``key`` or ``None``."""
        ...

    def put_if_absent(self, key: str, value: object) -> bool:
        """Store ``value`` only when ``key`` has none; return whether it did (atomically)."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Return the keys starting with ``prefix``, sorted."""
        ...


class AsyncKeyValueStore(Protocol):
    """The part of an asynchronous store the log uses (``converge.core.store.AsyncStore``)."""

    async def get(self, key: str) -> Any:
        """Return the value under ``key`` or ``None``."""
        ...

    async def put_if_absent(self, key: str, value: object) -> bool:
        """Store ``value`` only when ``key`` has none; return whether it did (atomically)."""
        ...

    async def list(self, prefix: str = "") -> list[str]:
        """Return the keys starting with ``prefix``, sorted."""
        ...


@dataclass(frozen=True, slots=True)
class _Stored:
    subject: str
    sequence: int
    time: float
    data: bytes
    headers: dict[str, str]
    event_id: str | None


@dataclass(slots=True)
class _Stream:
    records: list[_Stored] = field(default_factory=list)
    subject_last: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    loaded: bool = False  # read from the store at least once by this log
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, stored: _Stored) -> None:
        self.records.append(stored)
        self.subject_last[stored.subject] = stored.sequence
        if stored.event_id is not None:
            self.ids.setdefault(stored.event_id, stored.sequence)


def _parse(value: object, sequence: int) -> _Stored | None:
    """Return the record a store value holds, or ``None`` when it is not one."""
    if not isinstance(value, Mapping):
        return None
    subject, at, body, headers = (value.get(k) for k in ("subject", "time", "body", "headers"))
    event_id = value.get("id")
    if (
        not isinstance(subject, str)
        or not isinstance(at, int | float)
        or not isinstance(body, bytes)
        or not isinstance(headers, Mapping)
        or not (event_id is None or isinstance(event_id, str))
    ):
        return None
    return _Stored(
        subject, sequence, float(at), body, {str(k): str(v) for k, v in headers.items()}, event_id
    )


class _StoreSubscription(Subscription):
    def __init__(
        self,
        log: StoreEventLog,
        handler: Handler,
        *,
        stream: str,
        subject: str | None,
        start_seq: int,
    ) -> None:
        super().__init__(handler, stream=stream, subject=subject, start_seq=start_seq)
        self._log = log
        self._next = start_seq  # next sequence to look at
        self._task: asyncio.Task[None] | None = None

    def _begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"store-subscription-{self.stream}"
        )

    async def _run(self) -> None:
        log, kind = self._log, self.stream
        try:
            while self.is_active:
                changed = log._changed
                state = log._stream(kind)
                while self._next <= len(state.records) and self.is_active:
                    stored = state.records[self._next - 1]
                    self._next += 1
                    if self.subject is not None and not subject_matches(
                        self.subject, stored.subject
                    ):
                        self._advance(stored.sequence)
                        continue
                    recorded = log._decode(kind, stored)
                    if recorded is None:
                        self._skip(stored.sequence)
                    elif not await self._dispatch(recorded):
                        return
                if not self.is_active:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(log.poll_interval_sec):
                        await changed.wait()
                if log._closed:
                    self._fail(log._closed_error())
                    return
                await log._pull(kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: stop delivery, report it
            logger.exception("store subscription on stream %s failed", kind)
            self._fail(exc)

    def _check_backend(self) -> None:
        if self._log._closed:
            self._fail(self._log._closed_error())

    async def _close(self) -> None:
        self._log._subscriptions.discard(self)
        task, self._task = self._task, None
        if task is asyncio.current_task():
            return
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(_STOP_TIMEOUT_SEC):
                    await task


def check_append(state: _Stream, event_id: str, subject: str, expected: int | None) -> int | None:
    """Return the sequence of ``event_id`` when an append of it is a retry, else ``None``.

    Raises ``ConcurrencyError`` when ``expected`` is not the subject's last sequence.
    As on JetStream, the expected version is checked before deduplication, and a
    retried event stored after the expected version is the original.
    """
    known = state.ids.get(event_id)
    actual = state.subject_last.get(subject, 0)
    if known is not None and (expected is None or actual == expected):
        return known
    if expected is not None and actual != expected:
        if known is not None and known > expected and state.records[known - 1].subject == subject:
            return known
        raise ConcurrencyError(
            f"append to {subject!r} expected last sequence {expected}, but it is {actual}; "
            "reload the entity and retry",
            subject=subject,
            expected=expected,
            actual=actual,
        )
    return None


def kinds_for(stream: str | None, subject: str | None) -> list[str]:
    """Return the stream kinds a read names (``[]``: every stream)."""
    if subject is not None:
        validate_filter(subject)
        kind = kind_of(subject)
        if stream is not None and validate_kind(stream) != kind:
            raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        return [kind]
    if stream is not None:
        return [validate_kind(stream)]
    return []
