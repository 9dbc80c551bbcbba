"""Projection positions of live processes, kept on the broker for ``projections status``.

A :class:`~converge.service.ProjectedService` whose projection follows a JetStream log
that may create streams (``converge run``, ``converge serve``, Workers) starts a
:class:`PositionReporter`: every ``interval_sec`` and when it stops it writes one
record into the KV bucket ``<NAMESPACE>_POSITIONS`` under the key
``<process>.<projection>``: the projection's per-stream positions, the process
(host, pid), the Unix time of the report and whether the process stopped. Writers
create the bucket (history 1, records expire after a day); :func:`read_positions`
only reads it, so inspection creates and changes nothing. Reporting problems (a full
disk, a refused permission) are logged once and never stop the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from typing import TYPE_CHECKING, Protocol

import orjson

from converge.errors import ConvergeError

if TYPE_CHECKING:
    from events.connection import NatsClient
    from events.jetstream.kv import KVBucket

__all__ = [
    "PROCESS_ID",
    "PositionReporter",
    "position_reporter",
    "positions_bucket",
    "read_positions",
]

logger = logging.getLogger(__name__)

PROCESS_ID = re.sub(
    r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
)
"""This process's identity in position reports (host, pid and a random tag)."""

DEFAULT_INTERVAL_SEC = 5.0
_TTL_SEC = 24 * 3600.0


class _Followed(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def position(self) -> dict[str, int]: ...


def position_reporter(log: object, runner: _Followed) -> PositionReporter | None:
    """A reporter for ``runner`` when ``log`` is a JetStream log that may create streams."""
    from events.jetstream.log import JetStreamEventLog

    if not isinstance(log, JetStreamEventLog) or not log.creates_streams:
        return None
    nc = log.connection
    if nc is None:
        return None
    return PositionReporter(nc, log.namespace, runner)


def positions_bucket(namespace: str) -> str:
    """The KV bucket holding ``namespace``'s position reports."""
    return f"{namespace.upper()}_POSITIONS"


class PositionReporter:
    """Write ``runner``'s positions into ``namespace``'s bucket on ``nc`` while started."""

    def __init__(
        self,
        nc: NatsClient,
        namespace: str,
        runner: _Followed,
        *,
        interval_sec: float = DEFAULT_INTERVAL_SEC,
    ) -> None:
        self._nc = nc
        self.namespace = namespace
        self._runner = runner
        self.interval_sec = interval_sec
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._warned = False
        self._reported = False
        self._bucket: KVBucket | None = None

    @property
    def key(self) -> str:
        return f"{PROCESS_ID}.{re.sub(r'[^A-Za-z0-9_-]', '-', self._runner.name)}"

    async def start(self) -> None:
        """Report now and every ``interval_sec``, in the background. Idempotent."""
        if self._task is not None:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=f"positions {self.key}")

    async def stop(self) -> None:
        """Stop reporting and write a last report marked stopped. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, self.interval_sec + 15.0)
        if self._reported or not self._warned:  # not again where reporting is refused
            await self._report(stopped=True)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self._report(stopped=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_sec)

    async def _report(self, *, stopped: bool) -> None:
        from events.jetstream.kv import KVBucket

        record = {
            "process": PROCESS_ID,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "projection": self._runner.name,
            "position": dict(self._runner.position),
            "at": time.time(),
            "interval_sec": self.interval_sec,
            "stopped": stopped,
        }
        try:
            if self._bucket is None:
                self._bucket = await KVBucket.bind(
                    self._nc,
                    bucket=positions_bucket(self.namespace),
                    ttl_sec=_TTL_SEC,
                    timeout_sec=5.0,
                    label="positions",
                )
            await self._bucket.put(self.key, orjson.dumps(record))
            self._reported = True
        except (ConvergeError, OSError) as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot report projection positions: %s", exc)


async def read_positions(
    nc: NatsClient, namespace: str, timeout_sec: float = 5.0
) -> list[dict[str, object]]:
    """Every report in ``namespace``'s bucket (``[]`` when no process wrote one).

    Reads only: a missing bucket is not created.
    """
    from events.jetstream.kv import read_bucket

    raw = await read_bucket(nc, positions_bucket(namespace), timeout_sec=timeout_sec)
    out: list[dict[str, object]] = []
    for _key, value in sorted(raw.items()):
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict):
            out.append(data)
    return out
