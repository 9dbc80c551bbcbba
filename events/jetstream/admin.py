"""Stream administration for the JetStream event log: provisioning, state, listing, deletion.

Streams are provisioned once per kind and connection (:meth:`StreamAdmin.ensure_kind`,
see :func:`~events.jetstream.streams.ensure_stream`); a stream deleted behind the
log's back is provisioned again after :meth:`StreamAdmin.forget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats.errors
from nats.js import api
from nats.js.errors import APIError

from converge.errors import ConfigError, ConvergeTimeoutError, EventLogError
from events.jetstream.connection import LogConnection
from events.jetstream.jsapi import ERR_STREAM_NOT_FOUND, StoredMsg, get_msg, stream_names
from events.jetstream.streams import ensure_stream
from events.subjects import KNOWN_KINDS, kind_of, validate_filter, validate_kind

__all__ = ["StreamAdmin"]

logger = logging.getLogger(__name__)


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

    async def ensure_kind(self, kind: str) -> str:
        """Provision ``kind``'s stream once per connection; return its name."""
        spec = self._conn.opts.spec(kind)
        if kind in self._ready_kinds:
            return spec.name
        lock = self._kind_locks.setdefault(kind, asyncio.Lock())
        async with lock:
            if kind not in self._ready_kinds:
                assert self._conn.jsm is not None
                await ensure_stream(self._conn.jsm, spec)
                self._ready_kinds.add(kind)
        return spec.name

    async def ensure_known_kinds(self) -> None:
        for kind in KNOWN_KINDS:
            await self.ensure_kind(kind)

    async def stream_state(self, kind: str) -> api.StreamState | None:
        """Return the state of ``kind``'s stream, ``None`` when it does not exist."""
        jsm = self._conn.jsm
        assert jsm is not None
        name = self._conn.opts.spec(kind).name
        try:
            info = await jsm.stream_info(name)
        except APIError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise EventLogError(f"cannot read stream {name}: {exc.description}") from exc
        except nats.errors.TimeoutError as exc:
            raise ConvergeTimeoutError(
                f"JetStream did not answer within {self._conn.opts.api_timeout_sec}s"
            ) from exc
        return info.state

    async def stream_names(self) -> list[str]:
        """Return the names of the streams of this namespace (``<NS>_...``)."""
        nc = await self._conn.ready()
        opts = self._conn.opts
        head = opts.namespace.upper() + "_"
        names = await stream_names(nc, f"{opts.namespace}.>", opts.api_timeout_sec)
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
        """Look up one stored message of ``kind``'s stream on its leader."""
        nc = await self._conn.ready()
        opts = self._conn.opts
        return await get_msg(nc, opts.spec(kind).name, opts.api_timeout_sec, **request)

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
