"""Raw delivery routing for bounded reads: deliveries taken before nats-py builds messages.

nats-py's parser calls ``Client._process_msg(sid, subject, reply, data, headers)``
for every MSG. A :class:`RawRouter`, installed once per connection in front of
that method, hands the deliveries of read subscriptions (by subscription id, the
private ``Subscription._id``) straight to their reads; every other subscription
takes the usual nats-py path. Routed deliveries skip nats-py's message objects,
header parsing, pending queue and ``in_msgs`` statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import nats.errors

from converge.errors import EventLogError
from events.connection import NatsClient

__all__ = ["RawHandler", "RawRouter", "install_router", "parse_delivery_headers"]

RawHandler = Callable[[bytes, bytes, bytes, bytes], str | None]
_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() removes


def parse_delivery_headers(raw: bytes) -> dict[str, str] | None:
    """Parse a delivery's header block as nats-py does; ``None`` when it holds none."""
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


def install_router(nc: NatsClient) -> RawRouter:
    """Return the connection's router, installing it on first use."""
    found = getattr(nc, "_converge_read_router", None)
    if isinstance(found, RawRouter):
        return found
    if not callable(getattr(nc, "_process_msg", None)):
        raise EventLogError(
            "this nats-py has no Client._process_msg, which converge's reads route "
            "through; install the nats-py version converge pins (pip install -e .)"
        )
    router = RawRouter(nc)
    setattr(nc, "_converge_read_router", router)  # noqa: B010
    setattr(nc, "_process_msg", router.process_msg)  # noqa: B010
    return router
