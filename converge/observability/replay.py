"""Record the messages an agent sent and received, export them, load and replay them.

The file format is JSON lines, one record per line::

    {"type": "message", "direction": "outbound", "agent_id": ..., "transport": ...,
     "timestamp": 1700000000.0, "data": <Message.to_dict()>}

Bytes (signatures, encrypted payloads) are written as ``{"$bytes": "<base64>"}``.
A line holding a bare ``Message.to_dict()`` is read as an outbound record.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import inspect
import os
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from converge.core.message import Message
from converge.errors import ConfigError, DecodeError

__all__ = ["ReplayLog", "ReplayRunner"]

DIRECTIONS = ("inbound", "outbound")
_BYTES = "$bytes"


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_BYTES} and isinstance(value[_BYTES], str):
            try:
                return base64.b64decode(value[_BYTES], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DecodeError(f"invalid base64 in {_BYTES}: {exc}") from exc
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class _Pushable(Protocol):
    async def push(self, message: Message) -> Any: ...


class ReplayLog:
    """An in-memory list of message records (``events``), bounded by ``max_events``.

    ``max_events=None`` keeps everything; otherwise the oldest records are dropped
    first. Records are plain dicts (see the module docstring).
    """

    def __init__(self, *, max_events: int | None = None) -> None:
        if max_events is not None and (isinstance(max_events, bool) or max_events < 1):
            raise ConfigError(f"ReplayLog.max_events must be >= 1 or None, got {max_events!r}")
        self.max_events = max_events
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)

    # -- recording -------------------------------------------------------------------

    def _record(
        self, message: Message, direction: str, agent_id: str | None, transport: str | None
    ) -> None:
        if not isinstance(message, Message):
            raise DecodeError(f"ReplayLog records Message objects, got {type(message).__name__}")
        self.events.append(
            {
                "type": "message",
                "direction": direction,
                "agent_id": agent_id,
                "transport": transport,
                "timestamp": message.timestamp,
                "data": message.to_dict(),
            }
        )

    def record_message(
        self,
        message: Message,
        *,
        direction: str = "outbound",
        agent_id: str | None = None,
        transport: str | None = None,
    ) -> None:
        """Record ``message`` (sent, unless ``direction="inbound"``).

        Raises ``DecodeError`` for a non-Message and ``ConfigError`` for an unknown
        direction.
        """
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self._record(message, direction, agent_id, transport)

    def record_inbound(
        self, message: Message, *, agent_id: str | None = None, transport: str | None = None
    ) -> None:
        """Record a received ``message``."""
        self._record(message, "inbound", agent_id, transport)

    def record_outbound(
        self, message: Message, *, agent_id: str | None = None, transport: str | None = None
    ) -> None:
        """Record a sent ``message``."""
        self._record(message, "outbound", agent_id, transport)

    def messages(self, *, direction: str | None = None) -> list[Message]:
        """Return the recorded messages (optionally of one direction), in record order."""
        return [
            Message.from_dict(event["data"])
            for event in self.events
            if event.get("type") == "message"
            and (direction is None or event.get("direction") == direction)
        ]

    # -- files -----------------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every record to ``path`` as JSON lines, atomically; return the count.

        The file is written to a temporary name and renamed, so readers never see
        half a file. Raises ``OSError`` when the file cannot be written.
        """
        target = Path(path)
        lines = [orjson.dumps(_encode(event)) for event in self.events]
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                for line in lines:
                    fh.write(line)
                    fh.write(b"\n")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return len(lines)

    def load(self, path: str | os.PathLike[str]) -> int:
        """Replace the records with those in the JSON-lines file ``path``; return the count.

        Blank lines are skipped. Raises ``DecodeError`` naming the file and the line
        number for a line that is not JSON, not an object, or not a valid message
        record (nothing is replaced then), and ``OSError`` when the file cannot be read.
        """
        source = Path(path)
        loaded: list[dict[str, Any]] = []
        with source.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                loaded.append(self._parse_line(raw, f"{source}:{number}"))
        self.events = deque(loaded, maxlen=self.max_events)
        return len(loaded)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, max_events: int | None = None) -> ReplayLog:
        """Return a log loaded from ``path`` (see :meth:`load`)."""
        log = cls(max_events=max_events)
        log.load(path)
        return log

    @staticmethod
    def _parse_line(raw: bytes, where: str) -> dict[str, Any]:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected a JSON object, got {type(value).__name__}")
        try:
            record: dict[str, Any] = _decode(value)
        except DecodeError as exc:
            raise DecodeError(f"{where}: {exc}") from exc
        if "data" not in record and "sender" in record:  # a bare Message.to_dict()
            record = {
                "type": "message",
                "direction": "outbound",
                "agent_id": None,
                "transport": None,
                "timestamp": record.get("timestamp"),
                "data": record,
            }
        if record.get("type", "message") == "message":
            direction = record.get("direction", "outbound")
            if direction not in DIRECTIONS:
                raise DecodeError(
                    f"{where}: direction must be one of {DIRECTIONS}, got {direction!r}"
                )
            try:
                message = Message.from_dict(record.get("data"))  # type: ignore[arg-type]
            except DecodeError as exc:
                raise DecodeError(f"{where}: invalid message record: {exc}") from exc
            record.setdefault("type", "message")
            record["direction"] = direction
            record["timestamp"] = message.timestamp
        return record


class ReplayRunner:
    """Replay the message records of a :class:`ReplayLog` into an inbox or a callback."""

    def __init__(self, replay_log: ReplayLog) -> None:
        self.replay_log = replay_log

    async def replay(
        self,
        *,
        inbox: _Pushable | None = None,
        callback: Callable[[Message], Awaitable[Any] | Any] | None = None,
        direction: str | None = None,
        agent_id: str | None = None,
        start_ts: float | None = None,
        end_ts: float | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Deliver the matching message records in timestamp order; return them.

        Filters: ``direction``, ``agent_id``, ``start_ts``/``end_ts`` (inclusive,
        Unix seconds). Each message goes to ``inbox.push`` or ``callback`` (awaited
        when it returns an awaitable); ``dry_run`` only selects. Non-message records
        are skipped.
        """
        selected: list[dict[str, Any]] = []
        for event in self.replay_log.events:
            if event.get("type") != "message":
                continue
            if direction is not None and event.get("direction") != direction:
                continue
            if agent_id is not None and event.get("agent_id") != agent_id:
                continue
            ts = float(event.get("timestamp") or 0.0)
            if (start_ts is not None and ts < start_ts) or (end_ts is not None and ts > end_ts):
                continue
            selected.append(event)
        selected.sort(key=lambda e: float(e.get("timestamp") or 0.0))
        if dry_run:
            return selected
        for event in selected:
            message = Message.from_dict(event["data"])
            if inbox is not None:
                await inbox.push(message)
            elif callback is not None:
                result = callback(message)
                if inspect.isawaitable(result):
                    await result
        return selected
