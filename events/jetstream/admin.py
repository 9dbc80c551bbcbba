"""Stream administration for the JetStream event log: provisioning, state, listing, deletion.

Streams are provisioned once per kind and connection (:meth:`StreamAdmin.ensure_kind`,
see :func:`~events.jetstream.streams.ensure_stream`): created when missing, used as
they are when they exist. A read-only log (``create_streams=False``) creates and
changes nothing: a missing namespace or stream raises
:class:`~converge.errors.NotFoundError` naming it. :meth:`StreamAdmin.update_streams`
applies the configuration on purpose. A stream deleted behind the log's back is
provisioned again after :meth:`StreamAdmin.forget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from nats.js import api
from nats.js.errors import APIError

from converge.errors import ConfigError, ConvergeTimeoutError, EventLogError, NotFoundError
from events.jetstream.connection import LogConnection
from events.jetstream.jsapi import ERR_STREAM_NOT_FOUND, StoredMsg, get_msg, stream_names
from events.jetstream.retry import JetStreamUnavailable, ride_out
from events.jetstream.streams import ensure_stream, update_stream
from events.subjects import KNOWN_KINDS, kind_of, validate_filter, validate_kind

__all__ = ["StreamAdmin", "StreamStatus"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _api_error(what: str, exc: APIError) -> EventLogError:
    """``exc`` as an error of ``what``: retried by ``ride_out`` when it is a 503."""
    cls = JetStreamUnavailable if exc.code == 503 else EventLogError
    return cls(f"{what}: {exc.description} (err_code {exc.err_code})")


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A stream's main configuration and state, as the broker reports them."""

    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    replicas: int
    storage: str
    retention: str
    max_age_sec: float
    max_msgs: int
    max_bytes: int
    duplicate_window_sec: float

    @classmethod
    def of(cls, info: api.StreamInfo) -> StreamStatus:
        config, state = info.config, info.state
        return cls(
            name=str(config.name),
            subjects=tuple(config.subjects or ()),
            messages=int(state.messages or 0),
            bytes=int(state.bytes or 0),
            first_seq=int(state.first_seq or 0),
            last_seq=int(state.last_seq or 0),
            replicas=int(config.num_replicas or 1),
            storage=str(getattr(config.storage, "value", config.storage)),
            retention=str(getattr(config.retention, "value", config.retention)),
            max_age_sec=float(config.max_age or 0),
            max_msgs=int(config.max_msgs if config.max_msgs is not None else -1),
            max_bytes=int(config.max_bytes if config.max_bytes is not None else -1),
            duplicate_window_sec=float(config.duplicate_window or 0),
        )


class StreamAdmin:
    """Provision, inspect and delete the streams of one log's namespace."""

    def __init__(self, conn: LogConnection) -> None:
        self._conn = conn
        self._ready_kinds: set[str] = set()
        self._kind_locks: dict[str, asyncio.Lock] = {}

    def reset(self) -> None:
        """Forget every provisioned kind (a new connection provisions again)."""
        self._ready_kinds.clear()

    def forget(self, kind: str) -> None:
        """Provision ``kind`` again on next use (its stream was deleted behind our back)."""
        self._ready_kinds.discard(kind)

    def is_ready(self, kind: str) -> bool:
        """Whether ``kind``'s stream was provisioned on this connection already."""
        return kind in self._ready_kinds

    async def ensure_kind(self, kind: str) -> str:
        """Provision ``kind``'s stream once per connection; return its name."""
        spec = self._conn.opts.spec(kind)
        if kind in self._ready_kinds:
            return spec.name
        lock = self._kind_locks.setdefault(kind, asyncio.Lock())
        async with lock:
            if kind not in self._ready_kinds:
                assert self._conn.jsm is not None
                writer = self._conn.opts.create_streams
                jsm = self._conn.jsm
                try:
                    await self._ride_out(
                        f"provisioning stream {spec.name}",
                        lambda: ensure_stream(jsm, spec, create=writer, warn=writer),
                    )
                except NotFoundError:
                    raise self._missing(kind) from None
                self._ready_kinds.add(kind)
        return spec.name

    async def _ride_out(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried through a leader election (see :mod:`events.jetstream.retry`)."""
        return await ride_out(
            what, call, limit_sec=self._conn.opts.api_retry_sec, check_open=self._conn.check_open
        )

    def _missing(self, kind: str) -> NotFoundError:
        opts = self._conn.opts
        return NotFoundError(
            f"namespace {opts.namespace!r} has no stream {opts.spec(kind).name} ({kind} "
            "events); check the namespace, or let a writer create it"
        )

    async def ensure_known_kinds(self) -> None:
        """Provision the streams of the known kinds; read-only: check the namespace exists."""
        if self._conn.opts.create_streams:
            for kind in KNOWN_KINDS:
                await self.ensure_kind(kind)
        elif not await self.stream_names():
            namespace = self._conn.opts.namespace
            raise NotFoundError(
                f"namespace {namespace!r} has no streams on this broker; check the "
                "namespace (--namespace) and the broker URL"
            )

    async def update_streams(self) -> dict[str, dict[str, tuple[Any, Any]]]:
        """Apply the configuration to the known kinds' streams and the namespace's others.

        Returns ``{stream name: {field: (old, new)}}`` of what changed (``{}`` for a
        stream that was up to date or created). Refused on a read-only log.
        """
        opts = self._conn.opts
        if not opts.create_streams:
            raise ConfigError("a read-only event log (create_streams=False) changes no stream")
        await self._conn.ready()
        jsm = self._conn.jsm
        assert jsm is not None
        changed: dict[str, dict[str, tuple[Any, Any]]] = {}
        for kind in sorted({*KNOWN_KINDS, *await self.all_kinds()}):
            spec = opts.spec(kind)
            changed[spec.name] = await self._ride_out(
                f"updating stream {spec.name}", functools.partial(update_stream, jsm, spec)
            )
            self._ready_kinds.add(kind)
        return changed

    async def stream_info(self, stream: str) -> StreamStatus:
        """Return the status of ``stream``: a kind (``tasks``) or a full stream name."""
        await self._conn.ready()
        jsm = self._conn.jsm
        assert jsm is not None
        opts = self._conn.opts
        if stream.upper() == stream and "_" in stream:
            name = stream
        else:
            name = opts.spec(validate_kind(stream)).name

        async def lookup() -> api.StreamInfo:
            try:
                return await jsm.stream_info(name)
            except APIError as exc:
                if exc.err_code == ERR_STREAM_NOT_FOUND:
                    raise NotFoundError(
                        f"no stream {name} on this broker; check the name and the namespace"
                    ) from None
                raise _api_error(f"cannot read stream {name}", exc) from exc
            except nats.errors.TimeoutError as exc:
                raise ConvergeTimeoutError(
                    f"JetStream did not answer within {opts.api_timeout_sec}s"
                ) from exc

        return StreamStatus.of(await self._ride_out(f"stream info of {name}", lookup))

    async def streams_info(self, *, all_streams: bool = False) -> list[StreamStatus]:
        """Return the status of the namespace's streams (every stream with ``all_streams``)."""
        await self._conn.ready()
        jsm = self._conn.jsm
        assert jsm is not None
        prefix = self._conn.opts.namespace.upper() + "_"

        async def listing() -> list[api.StreamInfo]:
            try:
                return await jsm.streams_info()
            except nats.errors.TimeoutError as exc:
                raise ConvergeTimeoutError(
                    f"JetStream did not answer within {self._conn.opts.api_timeout_sec}s"
                ) from exc
            except APIError as exc:
                raise _api_error("cannot list streams", exc) from exc
            except nats.errors.Error as exc:
                raise EventLogError(f"cannot list streams: {exc}") from exc

        infos = await self._ride_out("listing streams", listing)
        rows = [StreamStatus.of(i) for i in infos]
        return sorted(
            (r for r in rows if all_streams or r.name.startswith(prefix)), key=lambda r: r.name
        )

    async def stream_state(self, kind: str) -> api.StreamState | None:
        """Return the state of ``kind``'s stream, ``None`` when it does not exist.

        Asked again at once when the connection is lost and back before the answer.
        """
        jsm = self._conn.jsm
        assert jsm is not None
        name = self._conn.opts.spec(kind).name

        async def lookup() -> api.StreamState | None:
            try:
                info = await self._conn.resend_on_reconnect(
                    lambda: jsm.stream_info(name), f"a state query of {name}"
                )
            except APIError as exc:
                if exc.err_code == ERR_STREAM_NOT_FOUND:
                    if not self._conn.opts.create_streams:
                        raise self._missing(kind) from None
                    return None
                raise _api_error(f"cannot read stream {name}", exc) from exc
            except nats.errors.TimeoutError as exc:
                raise ConvergeTimeoutError(
                    f"JetStream did not answer within {self._conn.opts.api_timeout_sec}s"
                ) from exc
            return info.state

        return await self._ride_out(f"stream state of {name}", lookup)

    async def stream_names(self) -> list[str]:
        """Return the names of the streams of this namespace (``<NS>_...``)."""
        nc = await self._conn.ready()
        opts = self._conn.opts
        head = opts.namespace.upper() + "_"
        names = await self._ride_out(
            "listing stream names",
            functools.partial(stream_names, nc, f"{opts.namespace}.>", opts.api_timeout_sec),
        )
        return [name for name in names if name.startswith(head)]

    async def all_kinds(self) -> list[str]:
        """Return the kinds whose streams exist under this namespace, sorted."""
        opts = self._conn.opts
        suffix_to_kind = {v: k for k, v in KNOWN_KINDS.items()}
        head = opts.namespace.upper() + "_"
        kinds: set[str] = set()
        for name in await self.stream_names():
            suffix = name[len(head) :]
            kind = suffix_to_kind.get(suffix, suffix.lower())
            with contextlib.suppress(ConfigError):
                if opts.spec(kind).name == name:
                    kinds.add(kind)
        return sorted(kinds)

    async def delete_streams(self) -> list[str]:
        """Delete every stream of this namespace and return their names. Irreversible."""
        await self._conn.ready()
        jsm = self._conn.jsm
        assert jsm is not None
        deleted: list[str] = []
        for name in await self.stream_names():
            try:
                await jsm.delete_stream(name)
            except APIError as exc:
                if exc.err_code != ERR_STREAM_NOT_FOUND:
                    raise EventLogError(f"cannot delete stream {name}: {exc}") from exc
            deleted.append(name)
        self.reset()
        logger.warning("deleted streams %s", ", ".join(deleted) or "(none)")
        return deleted

    async def get_msg(self, kind: str, **request: Any) -> StoredMsg | None:
        """Look up one stored message of ``kind``'s stream on its leader.

        Sent again at once when the connection is lost and back before the answer.
        """
        nc = await self._conn.ready()
        opts = self._conn.opts
        name = opts.spec(kind).name
        lookup = functools.partial(get_msg, nc, name, opts.api_timeout_sec, **request)
        return await self._ride_out(
            f"message lookup on {name}",
            lambda: self._conn.resend_on_reconnect(lookup, f"a lookup on {name}"),
        )

    async def last_sequence(self, *, stream: str, subject: str | None = None) -> int:
        """Return the last sequence of ``stream`` or of ``subject`` in it (0 if none)."""
        self._conn.check_open()
        validate_kind(stream)
        await self._conn.ready()
        if subject is None:
            state = await self.stream_state(stream)
            return 0 if state is None else int(state.last_seq or 0)
        validate_filter(subject)
        if kind_of(subject) != stream:
            raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        stored = await self.get_msg(stream, last_by_subj=f"{self._conn.opts.namespace}.{subject}")
        return 0 if stored is None else stored.seq
