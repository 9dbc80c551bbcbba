"""Encode events as JSON bodies with NATS headers, and decode them back.

Wire format (readable by any NATS client in any language):

* body: one JSON object (orjson) with the envelope fields (``id``,
  ``occurred_at``, ``actor``, ``correlation_id``, ``causation_id``) and the
  payload fields of the event, flat;
* headers: ``Nats-Msg-Id`` (the event id, JetStream's dedupe key),
  ``Converge-Event-Type``, ``Converge-Event-Version``,
  ``Content-Type: application/json``, and when set ``Converge-Correlation-Id``,
  ``Converge-Causation-Id``, ``Converge-Actor`` and the W3C ``traceparent``.

Decoding looks the type up in an :class:`EventRegistry`, applies the registered
upcasters one version step at a time (v1 -> v2 -> v3) and only then constructs
the event. Every failure is a :class:`~converge.errors.DecodeError` naming the
problem.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from converge.errors import ConfigError, DecodeError
from events.base import Event
from events.types import ALL_EVENT_TYPES

__all__ = [
    "CONTENT_TYPE",
    "HDR_ACTOR",
    "HDR_CAUSATION_ID",
    "HDR_CONTENT_TYPE",
    "HDR_CORRELATION_ID",
    "HDR_EVENT_TYPE",
    "HDR_EVENT_VERSION",
    "HDR_MSG_ID",
    "HDR_TRACEPARENT",
    "EventRegistry",
    "Upcaster",
    "current_traceparent",
    "decode_event",
    "default_registry",
    "encode_event",
]

HDR_MSG_ID = "Nats-Msg-Id"
HDR_EVENT_TYPE = "Converge-Event-Type"
HDR_EVENT_VERSION = "Converge-Event-Version"
HDR_CONTENT_TYPE = "Content-Type"
HDR_CORRELATION_ID = "Converge-Correlation-Id"
HDR_CAUSATION_ID = "Converge-Causation-Id"
HDR_ACTOR = "Converge-Actor"
HDR_TRACEPARENT = "traceparent"
CONTENT_TYPE = "application/json"

#: The W3C ``traceparent`` of the current context; :func:`encode_event` sends it
#: when no explicit ``traceparent`` is given (tracing sets it around spans).
current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "converge_traceparent", default=None
)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
E = TypeVar("E", bound=type[Event])


class EventRegistry:
    """Map stable event type names to classes, with upcasters for old versions.

    An upcaster registered for ``(type, from_version)`` turns the stored dict of
    version ``from_version`` into the dict of version ``from_version + 1``; the
    dict holds the envelope and payload fields, flat.
    """

    def __init__(self, event_types: tuple[type[Event], ...] = ()) -> None:
        self._types: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        for cls in event_types:
            self.register(cls)

    def register(self, cls: E) -> E:
        """Register an event class under its ``type``; usable as a class decorator.

        Raises :class:`ConfigError` when the class has no type or version, or when
        another class already holds the type name.
        """
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise ConfigError(f"{cls!r} is not an Event subclass")
        name = cls.type
        if not isinstance(name, str) or not name:
            raise ConfigError(f"event class {cls.__qualname__} has no `type` class variable")
        if not isinstance(cls.version, int) or cls.version < 1:
            raise ConfigError(f"event class {cls.__qualname__}: `version` must be an int >= 1")
        known = self._types.get(name)
        if known is not None and known is not cls:
            raise ConfigError(
                f"event type {name!r} is already registered to {known.__qualname__}; "
                "event type names must be unique"
            )
        self._types[name] = cls
        return cls

    def register_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` to turn an ``event_type`` dict of ``from_version`` into the next."""
        if not isinstance(from_version, int) or from_version < 1:
            raise ConfigError(f"upcaster for {event_type!r}: from_version must be an int >= 1")
        if (event_type, from_version) in self._upcasters:
            raise ConfigError(f"an upcaster for {event_type!r} from version {from_version} exists")
        self._upcasters[(event_type, from_version)] = fn

    def get(self, event_type: str) -> type[Event] | None:
        """Return the class registered for ``event_type``, or ``None``."""
        return self._types.get(event_type)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._types

    def types(self) -> list[str]:
        """Return the registered type names, sorted."""
        return sorted(self._types)

    def copy(self) -> EventRegistry:
        """Return an independent registry with the same types and upcasters."""
        clone = EventRegistry()
        clone._types = dict(self._types)
        clone._upcasters = dict(self._upcasters)
        return clone

    def upcast(self, event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        """Bring ``data`` of ``event_type`` at ``version`` to the registered version, stepwise."""
        cls = self._types.get(event_type)
        if cls is None:
            raise DecodeError(f"unknown event type {event_type!r}; register its class first")
        if version > cls.version:
            raise DecodeError(
                f"event type {event_type!r} version {version} is newer than the known version "
                f"{cls.version}; upgrade this reader"
            )
        while version < cls.version:
            fn = self._upcasters.get((event_type, version))
            if fn is None:
                raise DecodeError(
                    f"no upcaster for event type {event_type!r} from version {version} "
                    f"to {version + 1}; register one with register_upcaster()"
                )
            try:
                data = fn(dict(data))
            except Exception as exc:
                raise DecodeError(
                    f"upcaster for {event_type!r} v{version} failed: {_exc_name(exc)}: {exc}"
                ) from exc
            if not isinstance(data, dict):
                raise DecodeError(f"upcaster for {event_type!r} v{version} did not return a dict")
            version += 1
        return data

    def decode(self, event_type: str, version: int, payload: Mapping[str, Any]) -> Event:
        """Build the event of ``event_type`` stored at ``version`` from its flat dict.

        Raises :class:`DecodeError` for an unknown event_type, a version without an
        upcaster path, or fields that do not validate.
        """
        if not isinstance(payload, Mapping):
            raise DecodeError(f"event {event_type!r}: body must be a JSON object")
        data = self.upcast(event_type, version, dict(payload))
        cls = self._types[event_type]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise DecodeError(
                f"event {event_type!r} v{cls.version} does not validate: "
                f"{exc.error_count()} error(s): {_first_error(exc)}"
            ) from exc


def _exc_name(exc: BaseException) -> str:
    return type(exc).__name__


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(body)"
    return f"{loc}: {first.get('msg', '')}"


default_registry = EventRegistry(ALL_EVENT_TYPES)


def encode_event(
    event: Event,
    *,
    traceparent: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Return the JSON body and the NATS headers of ``event``.

    A new headers dict is returned on every call (nats-py mutates the dict it
    is given). Raises :class:`DecodeError` when a payload value is not
    JSON-serialisable.
    """
    if not isinstance(event, Event) or not event.type:
        raise DecodeError(f"{event!r} is not a registered-style Event (no `type`)")
    try:
        body = orjson.dumps(event.model_dump())
    except TypeError as exc:
        raise DecodeError(
            f"event {event.type!r} id={event.id}: payload is not JSON-serialisable: {exc}"
        ) from exc
    headers = {
        HDR_MSG_ID: event.id,
        HDR_EVENT_TYPE: event.type,
        HDR_EVENT_VERSION: str(event.version),
        HDR_CONTENT_TYPE: CONTENT_TYPE,
    }
    if event.correlation_id is not None:
        headers[HDR_CORRELATION_ID] = event.correlation_id
    if event.causation_id is not None:
        headers[HDR_CAUSATION_ID] = event.causation_id
    if event.actor is not None:
        headers[HDR_ACTOR] = event.actor
    tp = traceparent if traceparent is not None else current_traceparent.get()
    if tp:
        headers[HDR_TRACEPARENT] = tp
    if extra_headers:
        headers.update(extra_headers)
    return body, headers


def decode_event(
    data: bytes,
    headers: Mapping[str, str] | None,
    registry: EventRegistry | None = None,
) -> Event:
    """Decode a body and its headers into an event, upcasting old versions.

    Raises :class:`DecodeError` (and nothing else) for missing headers, an
    unknown type, a version that is not a positive integer, a body that is not
    a JSON object, or fields that do not validate.
    """
    reg = registry if registry is not None else default_registry
    if not headers:
        raise DecodeError(
            f"message has no headers; {HDR_EVENT_TYPE} and {HDR_EVENT_VERSION} are required"
        )
    try:
        type_ = headers.get(HDR_EVENT_TYPE)
        raw_version = headers.get(HDR_EVENT_VERSION)
    except Exception as exc:  # a hostile Mapping
        raise DecodeError(f"unreadable headers: {_exc_name(exc)}") from exc
    if not isinstance(type_, str) or not type_:
        raise DecodeError(f"message has no {HDR_EVENT_TYPE} header")
    if not isinstance(raw_version, str) or not raw_version:
        raise DecodeError(f"event {type_!r} has no {HDR_EVENT_VERSION} header")
    raw_version = raw_version.strip()
    if not raw_version.isascii() or not raw_version.isdigit() or len(raw_version) > 9:
        raise DecodeError(f"event {type_!r}: version {raw_version[:20]!r} is not a positive int")
    version = int(raw_version)
    if version < 1:
        raise DecodeError(f"event {type_!r}: version {version} is not a positive int")
    if type_ not in reg:
        raise DecodeError(f"unknown event type {type_!r}; register its class first")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"event {type_!r}: body must be bytes, not {type(data).__name__}")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"event {type_!r}: body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise DecodeError(f"event {type_!r}: body must be a JSON object")
    if "id" not in body:
        msg_id = headers.get(HDR_MSG_ID)
        if isinstance(msg_id, str) and msg_id:
            body["id"] = msg_id
    return reg.decode(type_, version, body)
