"""Low-level JetStream wire helpers used by :mod:`events.jetstream`.

Publish acknowledgements, stored-message lookups on the stream leader
(``STREAM.MSG.GET``, consistent where direct gets may lag on followers), stream
listing, and the metadata JetStream puts in a delivery's reply subject.
Errors are matched by ``err_code``, never by text.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

import nats.errors
import orjson

from converge.errors import ConvergeTimeoutError, EventLogError
from events.jetstream.client import NatsClient
from events.jetstream.retry import JetStreamUnavailable

__all__ = [
    "ERR_DUPLICATE_IN_PROCESS",
    "ERR_NO_MESSAGE_FOUND",
    "ERR_STREAM_NOT_FOUND",
    "ERR_WRONG_LAST_SEQUENCE",
    "ERR_WRONG_LAST_SUBJECT_SEQUENCE",
    "HDR_EXPECTED_SUBJECT_SEQ",
    "Ack",
    "PublishRefused",
    "StoredMsg",
    "create_consumer",
    "delete_consumer_nowait",
    "delivery_metadata",
    "get_msg",
    "parse_ack",
    "parse_headers",
    "parse_rfc3339",
    "reply_metadata",
    "stream_names",
]

HDR_EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_WRONG_LAST_SUBJECT_SEQUENCE = 10164
ERR_DUPLICATE_IN_PROCESS = 10158
ERR_NO_MESSAGE_FOUND = 10037
ERR_STREAM_NOT_FOUND = 10059


@dataclass(frozen=True, slots=True)
class Ack:
    """A positive publish acknowledgement."""

    seq: int
    duplicate: bool


class PublishRefused(Exception):
    """JetStream answered a publish with an error (or nobody answered: code 503)."""

    def __init__(self, err_code: int | None, code: int | None, description: str) -> None:
        super().__init__(description)
        self.err_code = err_code
        self.code = code
        self.description = description


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One stored message: full subject, stream sequence, time (Unix s), body, headers."""

    subject: str
    seq: int
    time: float
    data: bytes
    headers: dict[str, str]


def parse_ack(data: bytes, status: str = "") -> Ack:
    """Return the ack in a reply's ``data`` or raise :class:`PublishRefused`.

    ``status`` is the reply's status header (``"503"``: no responders), read when
    ``data`` is empty. Raises ``ValueError``/``KeyError`` for an unreadable reply.
    """
    if not data:
        if status == "503":
            raise PublishRefused(None, 503, "no stream holds this subject (no responders)")
        raise PublishRefused(None, None, f"empty publish acknowledgement (status {status!r})")
    resp = orjson.loads(data)
    error = resp.get("error")
    if error is not None:
        description = str(error.get("description", ""))
        raise PublishRefused(error.get("err_code"), error.get("code"), description)
    return Ack(int(resp["seq"]), bool(resp.get("duplicate", False)))


def parse_rfc3339(value: str) -> float:
    """Return Unix seconds of a JetStream timestamp (nanosecond fraction, ``Z``)."""
    value = value.strip()
    if value.endswith("Z"):
        value = value[:-1]
    base, _, frac = value.partition(".")
    seconds = int(dt.datetime.fromisoformat(base).replace(tzinfo=dt.UTC).timestamp())
    digits = "".join(ch for ch in frac if ch.isdigit())[:9].ljust(9, "0")
    # the same float as a delivery's nanosecond timestamp / 1e9
    return (seconds * 1_000_000_000 + int(digits)) / 1e9


def parse_headers(raw: bytes) -> dict[str, str]:
    """Parse a ``NATS/1.0`` header block into a dict."""
    headers: dict[str, str] = {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:  # the first line is NATS/1.0 [status]
        key, sep, value = line.partition(":")
        if sep and key.strip():
            headers[key.strip()] = value.strip()
    return headers


def reply_metadata(reply: str) -> tuple[int, float, int]:
    """Return ``(stream_seq, time_sec, num_pending)`` from a JetStream delivery subject.

    Raises ``ValueError``/``IndexError`` when ``reply`` is not one.
    """
    tokens = reply.split(".")
    if tokens[:2] != ["$JS", "ACK"]:
        raise ValueError(f"not a JetStream delivery: {reply!r}")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[7]) / 1e9, int(tokens[8])
    # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>...
    return int(tokens[7]), int(tokens[9]) / 1e9, int(tokens[10])


def delivery_metadata(reply: str) -> tuple[int, int, float, int]:
    """Return ``(stream_seq, consumer_seq, time_sec, num_pending)`` from a delivery subject.

    Raises ``ValueError``/``IndexError`` when ``reply`` is not one.
    """
    tokens = reply.split(".")
    if tokens[:2] != ["$JS", "ACK"]:
        raise ValueError(f"not a JetStream delivery: {reply!r}")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6]), int(tokens[7]) / 1e9, int(tokens[8])
    return int(tokens[7]), int(tokens[8]), int(tokens[9]) / 1e9, int(tokens[10])


async def _api(nc: NatsClient, subject: str, request: dict[str, Any], timeout_sec: float) -> Any:
    try:
        reply = await nc.request(subject, orjson.dumps(request), timeout=timeout_sec)
    except nats.errors.TimeoutError as exc:
        raise ConvergeTimeoutError(
            f"JetStream did not answer {subject} within {timeout_sec}s"
        ) from exc
    except nats.errors.NoRespondersError as exc:
        raise EventLogError(
            f"JetStream is not available ({subject} has no responders); start the server "
            "with JetStream enabled (-js)"
        ) from exc
    return orjson.loads(reply.data)


def _refused(what: str, error: dict[str, Any]) -> EventLogError:
    """An API error answer as an exception; a 503 (an election) is retried by ``ride_out``."""
    cls = JetStreamUnavailable if error.get("code") == 503 else EventLogError
    return cls(f"{what}: {error.get('description')} (err_code {error.get('err_code')})")


async def get_msg(
    nc: NatsClient, stream: str, timeout_sec: float, **request: Any
) -> StoredMsg | None:
    """Fetch one message from the stream leader; ``None`` when absent or no stream.

    ``request`` is ``seq=``, ``last_by_subj=``, or ``seq=`` with ``next_by_subj=``.
    """
    resp = await _api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", request, timeout_sec)
    error = resp.get("error")
    if error is not None:
        if error.get("err_code") in (ERR_NO_MESSAGE_FOUND, ERR_STREAM_NOT_FOUND):
            return None
        raise _refused(f"message lookup on {stream} failed", error)
    message = resp["message"]
    raw_headers = base64.b64decode(message["hdrs"]) if message.get("hdrs") else b""
    return StoredMsg(
        subject=message["subject"],
        seq=int(message["seq"]),
        time=parse_rfc3339(message["time"]),
        data=base64.b64decode(message["data"]) if message.get("data") else b"",
        headers=parse_headers(raw_headers) if raw_headers else {},
    )


async def stream_names(nc: NatsClient, subject: str, timeout_sec: float) -> list[str]:
    """Return the names of every stream whose subjects overlap ``subject`` (all pages)."""
    names: list[str] = []
    while True:
        resp = await _api(
            nc, "$JS.API.STREAM.NAMES", {"offset": len(names), "subject": subject}, timeout_sec
        )
        if "error" in resp:
            raise _refused("cannot list streams", resp["error"])
        page = resp.get("streams") or []
        names.extend(page)
        if not page or len(names) >= int(resp.get("total", 0)):
            return names


async def create_consumer(
    nc: NatsClient, stream: str, config: dict[str, Any], timeout_sec: float
) -> int:
    """Create the consumer ``config["name"]`` on ``stream``; return its pending count.

    Raises :class:`EventLogError` when JetStream refuses it and
    :class:`ConvergeTimeoutError` when it does not answer in ``timeout_sec``.
    """
    name = config["name"]
    resp = await _api(
        nc,
        f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
        {"stream_name": stream, "config": config},
        timeout_sec,
    )
    error = resp.get("error")
    if error is not None:
        raise _refused(f"cannot create a consumer on {stream}", error)
    return int(resp.get("num_pending") or 0)


async def delete_consumer_nowait(nc: NatsClient, stream: str, name: str) -> None:
    """Ask JetStream to delete consumer ``name`` of ``stream`` without waiting for the answer.

    Quiet when the connection is closed (the server drops the consumer anyway).
    """
    with contextlib.suppress(nats.errors.Error, OSError):
        await nc.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", b"")
