"""Raw delivery routing for bounded reads: deliveries taken before nats-py builds messages.

nats-py's parser calls ``Client._process_msg(sid, subject, reply, data, headers)``
for every MSG. A :class:`RawRouter`, installed once per connection in front of
that method, hands the deliveries of read subscriptions (by subscription id, the
private ``Subscription._id``) straight to their reads; every other subscription
takes the usual nats-py path. Routed deliveries skip nats-py's message objects,
header parsing, pending queue and ``in_msgs`` statistics (about 1.5x faster
rebuilds, see docs/benchmarks.md).

This hooks nats-py private API, so it is guarded: :func:`fast_path_problem` checks
the preconditions (a nats-py version the hook was checked against, ``_process_msg``
with the expected parameters; the read checks ``Subscription._id`` when it
subscribes). When one fails, :func:`install_router` returns ``None`` (logging why,
once per connection) and reads take :mod:`events.jetstream.stock_read`, nats-py's
own ordered consumer: a nats-py upgrade costs speed, not correctness.
``tests/events/test_jetstream_reads.py`` runs the read tests on both paths. After
checking a new nats-py release (the read tests pass with the router installed),
add it to :data:`FAST_PATH_NATS_PY`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable

import nats.aio.client
import nats.errors

from events.jetstream.client import NatsClient

__all__ = [
    "FAST_PATH_NATS_PY",
    "FastPathUnavailable",
    "RawHandler",
    "RawRouter",
    "disable_router",
    "fast_path_problem",
    "install_router",
    "parse_delivery_headers",
]

logger = logging.getLogger(__name__)

#: nats-py version prefixes whose ``Client._process_msg`` and ``Subscription._id`` the
#: router was checked against.
FAST_PATH_NATS_PY: tuple[str, ...] = ("2.16.",)

_PROCESS_MSG_PARAMS = ["sid", "subject", "reply", "data", "headers"]
_ROUTER_ATTR = "_converge_read_router"  # the router, or why the connection has none


class FastPathUnavailable(Exception):
    """The fast read path cannot run on this nats-py; read with the stock consumer."""


RawHandler = Callable[[bytes, bytes, bytes, bytes], str | None]
_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() removes


_NATS_LINE = b"NATS/1.0\r\n"
_LINE_CACHE_SIZE = 1024
_NAME_CACHE_SIZE = 256
_lines: dict[bytes, tuple[str, str]] = {}  # a whole header line -> its name and value
_names: dict[bytes, str] = {}  # the bytes before a line's colon -> the header name
#: names whose values differ from event to event: their lines are not kept
_VARYING = frozenset(
    {
        b"Nats-Msg-Id",
        b"Nats-Expected-Last-Subject-Sequence",
        b"Converge-Signature",
        b"traceparent",
        b"tracestate",
    }
)


def parse_delivery_headers(raw: bytes) -> dict[str, str] | None:
    """Parse a delivery's header block as nats-py does; ``None`` when it holds none.

    nats-py parses each line on its own (``Client._parse_header_lines``): the name
    before the first colon, stripped, skipped when not ASCII or holding whitespace; the
    value stripped and decoded as UTF-8 with replacement; a later line of a name wins.
    Lines repeat from event to event (type, version, content type, actor, signer), so
    whole lines are kept with their name and value (1,024 at most) and, for lines whose
    value changes every event (message id, expected sequence, signature, trace), the
    checked name is: about 1.9 us a block of seven lines instead of 2.6 (6.6 in
    nats-py), 2.8 instead of 6.2 when signed and traced.
    """
    if not raw.startswith(_NATS_LINE):
        return _parse_block(raw)
    out: dict[str, str] = {}
    lines = _lines
    names = _names
    for line in raw[10:].split(b"\r\n"):
        found = lines.get(line)
        if found is not None:
            out[found[0]] = found[1]
            continue
        name, colon, raw_value = line.partition(b":")
        if not colon:
            continue
        key = names.get(name)
        if key is None:
            key = _header_name(name)
            if key is None:
                continue
            if len(names) >= _NAME_CACHE_SIZE:
                names.clear()
            names[name] = key
        value = out[key] = raw_value.strip().decode("utf-8", "replace")
        if name not in _VARYING:
            if len(lines) >= _LINE_CACHE_SIZE:
                lines.clear()
            lines[line] = (key, value)
    return out or None


def _header_name(name: bytes) -> str | None:
    """Return the header name of the bytes before a line's colon; ``None``: nats-py skips it."""
    try:
        key = name.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(c.isspace() for c in key):
        return None
    return key


def _parse_block(raw: bytes) -> dict[str, str] | None:
    """Parse a whole header block as nats-py does (see :func:`parse_delivery_headers`)."""
    if len(raw) <= 10:  # b"NATS/1.0\r\n" and nothing more
        return None
    out: dict[str, str] = {}
    try:
        text = raw[10:].decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if text:
        for line in text.split("\r\n"):
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key = key.strip(_ASCII_SPACE)
            if (" " in key or not key.isprintable()) and any(c.isspace() for c in key):
                continue
            out[key] = value.strip(_ASCII_SPACE)
        return out or None
    # not ASCII: line by line, exactly like nats-py
    for raw_line in raw[10:].split(b"\r\n"):
        name, colon, raw_value = raw_line.partition(b":")
        if not colon:
            continue
        try:
            name_text = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if any(c.isspace() for c in name_text):
            continue
        out[name_text] = raw_value.strip().decode("utf-8", "replace")
    return out or None


class RawRouter:
    """Hand the deliveries of read subscriptions to their reads before nats-py parses them.

    Installed once per connection in front of its message dispatch (nats-py's
    parser calls ``nc._process_msg`` for every MSG); messages of every other
    subscription take the usual nats-py path. Routed deliveries skip nats-py's
    message objects, header parsing, pending queue and ``in_msgs`` statistics.
    """

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.routes: dict[int, RawHandler] = {}
        self.original = nc._process_msg

    async def process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self.routes.get(sid)
        if handler is None:
            await self.original(sid, subject, reply, data, headers)
            return
        answer = handler(subject, reply, data, headers)
        if answer:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self.nc.publish(answer)


def fast_path_problem(nc: NatsClient) -> str | None:
    """Return why the router cannot run on ``nc`` (``None`` when it can)."""
    version = str(getattr(nats.aio.client, "__version__", "unknown"))
    if not version.startswith(FAST_PATH_NATS_PY):
        return f"nats-py {version} is not a version the fast read path was checked against"
    method = getattr(nc, "_process_msg", None)
    if not callable(method):
        return "nats-py's Client has no _process_msg"
    try:
        params = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return "nats-py's Client._process_msg has no readable signature"
    if params != _PROCESS_MSG_PARAMS:
        return f"nats-py's Client._process_msg takes ({', '.join(params)})"
    return None


def install_router(nc: NatsClient) -> RawRouter | None:
    """Return the connection's router, installing it on first use; None: use the fallback."""
    found = getattr(nc, _ROUTER_ATTR, None)
    if isinstance(found, RawRouter):
        return found
    if isinstance(found, str):
        return None
    problem = fast_path_problem(nc)
    if problem is not None:
        disable_router(nc, problem)
        return None
    router = RawRouter(nc)
    setattr(nc, _ROUTER_ATTR, router)
    setattr(nc, "_process_msg", router.process_msg)  # noqa: B010
    return router


def disable_router(nc: NatsClient, reason: str) -> None:
    """Make reads on ``nc`` take nats-py's stock consumer from now on; log why, once."""
    found = getattr(nc, _ROUTER_ATTR, None)
    if isinstance(found, RawRouter):
        found.routes.clear()  # installed already: it passes every message on
    setattr(nc, _ROUTER_ATTR, reason)
    logger.warning(
        "fast JetStream reads are off for this connection (%s); reading with nats-py's "
        "ordered consumer, which is slower",
        reason,
    )
