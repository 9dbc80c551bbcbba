"""Appends on the wire: HPUB frames built here, acknowledgements taken before nats-py.

nats-py's ``publish`` checks both subjects with a regular expression, each header name
with another and each value with ``strip``/``translate``, then formats the frame; an
acknowledgement becomes a ``Msg`` object queued for a subscription task that awaits a
callback coroutine. Together that was about a quarter of ``TaskManager.submit``'s CPU
(see docs/benchmarks.md). Here:

* :func:`header_block` writes the ``NATS/1.0`` header block itself, byte for byte what
  nats-py 2.16 writes (``tests/events/test_eventlog_wire.py`` compares them, with
  Hypothesis): names converge defines are not checked again, a value is stripped and
  cleared of line breaks only when it is not plain printable text;
* :class:`DirectWriter` puts the frame on nats-py's outgoing buffer and wakes its flusher
  as ``Client.publish`` does, with the same checks (closed, draining, the reconnect
  buffer limit, ``max_payload``) raising the same nats-py errors;
* :func:`ack_status` reads the status of an acknowledgement from its raw header block,
  for acknowledgements routed by :mod:`events.jetstream.rawroute`.

This uses nats-py private attributes, so it is guarded like the read fast path:
:func:`direct_write_problem` checks the nats-py version (the same list,
:data:`~events.jetstream.rawroute.FAST_PATH_NATS_PY`) and the attributes; when it
finds a problem the appender publishes with ``Client.publish`` (slower, same result).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import nats.aio.client
import nats.errors

from events.codec import (
    CONTENT_TYPE,
    HDR_ACTOR,
    HDR_CAUSATION_ID,
    HDR_CONTENT_TYPE,
    HDR_CORRELATION_ID,
    HDR_EVENT_TYPE,
    HDR_EVENT_VERSION,
    HDR_MSG_ID,
    HDR_TRACEPARENT,
)
from events.jetstream import rawroute
from events.jetstream.client import NatsClient
from events.jetstream.jsapi import HDR_EXPECTED_SUBJECT_SEQ
from events.signing import HDR_SIGNATURE, HDR_SIGNER, HDR_SIGNER_KEY
from events.tracecontext import TRACE_HEADERS

__all__ = ["DirectWriter", "ack_status", "direct_write_problem", "header_block", "hpub_frame"]

# nats-py 2.16's rules for a header name and value (nats/aio/client.py)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
# Names written without the check: converge's own, each valid as it is.
_KNOWN_NAMES = frozenset(
    {
        HDR_MSG_ID,
        HDR_EVENT_TYPE,
        HDR_EVENT_VERSION,
        HDR_CONTENT_TYPE,
        HDR_CORRELATION_ID,
        HDR_CAUSATION_ID,
        HDR_ACTOR,
        HDR_TRACEPARENT,
        HDR_EXPECTED_SUBJECT_SEQ,
        HDR_SIGNATURE,
        HDR_SIGNER,
        HDR_SIGNER_KEY,
        *TRACE_HEADERS,
    }
)
_ATTRIBUTES = (
    "_pending",
    "_pending_data_size",
    "_max_pending_size",
    "_max_payload",
    "_flush_queue",
    "_flusher_task",
    "_flush_pending",
    "stats",
)
assert all(_HEADER_NAME.fullmatch(name) for name in _KNOWN_NAMES)
assert CONTENT_TYPE.isprintable()


def header_block(headers: dict[str, str]) -> bytes:
    """Return the ``NATS/1.0`` header block nats-py 2.16 would send for ``headers``.

    Raises ``nats.errors.BadHeaderError`` for a name nats-py refuses and
    ``UnicodeEncodeError`` for text UTF-8 cannot hold, as nats-py does.
    """
    lines = ["NATS/1.0\r\n"]
    for name, value in headers.items():
        if name not in _KNOWN_NAMES:
            name = name.strip()
            if not name:
                continue  # nats-py drops an empty name
            if not _HEADER_NAME.fullmatch(name):
                raise nats.errors.BadHeaderError(name)
        # printable text has no line break and no whitespace but the ASCII space
        if not value.isprintable() or value[:1] == " " or value[-1:] == " ":
            value = value.strip().translate(_NEWLINES)
            value.encode()  # text UTF-8 cannot hold fails here, in nats-py's order
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def hpub_frame(subject: str, reply: str, headers: dict[str, str], body: bytes) -> bytes:
    """Return the ``HPUB`` command publishing ``body`` with ``headers`` on ``subject``."""
    block = header_block(headers)
    size = len(block)
    return b"".join(
        (
            f"HPUB {subject} {reply} {size} {size + len(body)}\r\n".encode(),
            block,
            body,
            b"\r\n",
        )
    )


def ack_status(raw_headers: bytes | None) -> str:
    """Return the status code of a message's raw header block (``""`` when none)."""
    if not raw_headers or raw_headers[8:9] != b" ":
        return ""
    status = raw_headers[9:12].decode("ascii", "replace").strip()
    return status if status.isdigit() else ""


def direct_write_problem(nc: NatsClient) -> str | None:
    """Return why frames cannot go straight onto ``nc``'s buffer (``None``: they can)."""
    version = str(getattr(nats.aio.client, "__version__", "unknown"))
    if not version.startswith(rawroute.FAST_PATH_NATS_PY):
        return f"nats-py {version} is not a version the direct publish was checked against"
    missing = [name for name in _ATTRIBUTES if not hasattr(nc, name)]
    if missing:
        return f"nats-py's Client has no {', '.join(missing)}"
    if not isinstance(nc._pending, list) or not isinstance(nc.stats, dict):
        return "nats-py's Client keeps its outgoing buffer differently"
    return None


class DirectWriter:
    """Put publish frames on one nats-py connection's outgoing buffer, as ``publish`` does.

    :meth:`write` is synchronous; it returns ``True`` when the caller must then
    ``await nc._flush_pending(...)`` (see :meth:`flush`), which is rare: the buffer is
    past its limit, or nats-py's flusher task is not running.
    """

    __slots__ = ("nc",)

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc

    def write(self, frame: bytes, payload_size: int) -> bool:
        """Buffer ``frame`` (whose body is ``payload_size`` bytes) and wake the flusher.

        Raises the nats-py errors ``Client.publish`` raises in the same states.
        """
        nc: Any = self.nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        connected = nc.is_connected
        if not connected and (
            nc._max_pending_size <= 0 or payload_size + nc._pending_data_size > nc._max_pending_size
        ):
            raise nats.errors.OutboundBufferLimitError
        if payload_size > nc._max_payload:
            raise nats.errors.MaxPayloadError
        nc._pending.append(frame)
        nc._pending_data_size += len(frame)
        stats = nc.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += payload_size
        if 0 < nc._max_pending_size < nc._pending_data_size:
            return True  # nats-py waits for this flush (back-pressure)
        queue = nc._flush_queue
        if connected and queue is not None and queue.empty():
            flusher = nc._flusher_task
            if flusher is None or flusher.done():
                return True  # nats-py flushes inline then
            queue.put_nowait(asyncio.get_running_loop().create_future())
        return False

    async def flush(self) -> None:
        """Flush as nats-py does after a publish that crossed the buffer limit."""
        nc: Any = self.nc
        await nc._flush_pending(force_flush=0 < nc._max_pending_size < nc._pending_data_size)
