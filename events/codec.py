# Over 400 lines: the wire format (encoding, checked decoding, upcasting, fast path).
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

import contextlib
import contextvars
from collections.abc import Callable, Mapping
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import annotated_types
import orjson
from pydantic import BaseModel, ValidationError

from converge.errors import ConfigError, DecodeError
from events.base import Event
from events.tracecontext import current_trace_headers
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

BODY_TYPE = "type"
"""Body key naming the event type (as the type header does)."""
BODY_VERSION = "version"
"""Body key holding the event's schema version (an int)."""
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
        # (type, version header) -> the class and its fast builder (see _fast_builder),
        # for events stored at the registered version
        self._current: dict[tuple[str, str], tuple[type[Event], _Builder | None]] = {}
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
        self._current[(name, str(cls.version))] = (cls, _fast_builder(cls))
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
        clone._current = dict(self._current)
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

    def decode_current(self, data: bytes, headers: dict[str, str]) -> Event | None:
        """Return the event of a message stored at its type's registered version, or ``None``.

        The fast path of :func:`decode_event`: ``None`` (never an error) when the type
        is unknown or old, the body is not a JSON object, or a field is not already
        of its exact type; :func:`decode_event` then checks the message in full.
        """
        event_type = headers.get(HDR_EVENT_TYPE)
        version = headers.get(HDR_EVENT_VERSION)
        if type(event_type) is not str or type(version) is not str:
            return None
        current = self._current.get((event_type, version))
        if current is None:
            return None
        try:
            fields = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if type(fields) is not dict:
            return None
        if (
            fields.pop(BODY_TYPE, event_type) != event_type
            or str(fields.pop(BODY_VERSION, version)) != version
        ):
            return None  # the checked path names the disagreement
        cls, build = current
        if build is not None:
            return build(fields)
        if "id" not in fields:
            return None
        try:
            return cls.model_validate(fields)
        except ValidationError:
            return None

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


_Builder = Callable[[dict[str, Any]], Event | None]

_NONE_TYPE = type(None)
_LIST_OF_STR = "list[str]"
_ANY = "any"
_SAFE_CONFIG = frozenset({"frozen", "extra"})


def _field_check(annotation: Any) -> tuple[type, ...] | str | None:
    """Return the exact types a JSON value may have to pass ``annotation`` unchanged.

    Or ``_ANY``, ``_LIST_OF_STR``, or ``None`` when the field needs pydantic.
    """
    if annotation is Any:
        return _ANY
    if annotation in (str, float, int, bool):
        return (annotation,)
    if annotation is dict or annotation == dict[str, Any]:
        return (dict,)
    if annotation == list[str]:
        return _LIST_OF_STR
    if get_origin(annotation) in (Union, UnionType):
        args = get_args(annotation)
        if len(args) == 2 and _NONE_TYPE in args:
            inner = _field_check(next(a for a in args if a is not _NONE_TYPE))
            if isinstance(inner, tuple):
                return (*inner, _NONE_TYPE)
    return None


def _fast_builder(cls: type[Event]) -> _Builder | None:
    """Return a builder of ``cls`` from a decoded JSON dict that skips pydantic, or ``None``.

    The builder returns the event only when the dict has exactly the class's fields
    and every value already has the exact type the field keeps (``str``, ``float``,
    ``str | None``, ``dict[str, Any]``, ``list[str]``, ``Any``...), which is when
    ``cls.model_validate`` would return the same values; otherwise it returns
    ``None`` and the caller validates. Classes with validators, private attributes,
    aliases, constraints other than a minimum length, or a config beyond
    ``frozen``/``extra`` get no builder.

    Why a private path (it writes ``__dict__`` and ``__pydantic_fields_set__``): measured
    in CPU time per event after ``orjson.loads`` (best of 7 x 50,000, pydantic 2, a loaded
    2-core machine), ``task.submitted``: this builder 1.9 us, ``model_validate`` 3.1 us,
    ``model_construct`` 3.3 us; ``task.claimed``: 1.8, 2.3 and 4.1 us. ``model_construct``
    is no faster than validating, so the only public alternative is ``model_validate``,
    about 5-10 % more CPU per event in a rebuild (decode and fold, ~10 us per task
    event). The builder is kept for that, and guarded: it gives exactly what
    ``model_validate`` gives or declines (``tests/events/test_eventlog_codec.py``
    ``test_fast_decoding_matches_checked_decoding``, a hypothesis property test, and
    ``test_fast_decoding_is_used_and_keeps_events_frozen``). If a pydantic upgrade breaks
    them, make this function return ``None`` (everything then validates).
    """
    if (
        not set(cls.model_config) <= _SAFE_CONFIG
        or cls.__private_attributes__
        or cls.__pydantic_post_init__ is not None
        or any(getattr(cls.__pydantic_decorators__, kind) for kind in _DECORATOR_KINDS)
    ):
        return None
    typed: list[tuple[str, tuple[type, ...]]] = []
    str_lists: list[str] = []
    min_lengths: list[tuple[str, int]] = []
    for name, info in cls.model_fields.items():
        check = _field_check(info.annotation)
        if check is None or info.alias is not None or info.validation_alias is not None:
            return None
        for meta in info.metadata:
            if not isinstance(meta, annotated_types.MinLen) or check != (str,):
                return None
            min_lengths.append((name, meta.min_length))
        if check == _LIST_OF_STR:
            str_lists.append(name)
        elif check != _ANY:
            typed.append((name, check))  # type: ignore[arg-type]
    # the envelope as Event declares it is checked inline, the rest in loops
    envelope = set(_ENVELOPE_CHECKS) <= set(typed) and ("id", 1) in min_lengths
    if envelope:
        typed = [item for item in typed if item not in _ENVELOPE_CHECKS]
        min_lengths.remove(("id", 1))
    return _compile_builder(cls, envelope, typed, min_lengths, str_lists)


def _compile_builder(
    cls: type[Event],
    envelope: bool,
    typed: list[tuple[str, tuple[type, ...]]],
    min_lengths: list[tuple[str, int]],
    str_lists: list[str],
) -> _Builder:
    """Write the builder of :func:`_fast_builder` as straight-line code for ``cls``.

    The same checks as a loop over the fields, unrolled (as ``dataclasses`` writes
    ``__init__``): about 0.9 us instead of 1.7 for ``task.claimed`` (CPU time, best of 5
    x 100,000, a loaded 2-core machine). The dict has exactly the class's fields when
    it has as many keys and each field is found. The instance's slots are set with
    their descriptors (what ``object.__setattr__`` looks up each time).
    """
    names = list(cls.model_fields)
    local = {name: f"v{i}" for i, name in enumerate(names)}
    env: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "field_names": frozenset(names),
        "KeyError": KeyError,
        "len": len,
        "type": type,
        "set": set,
        "all": all,
        "str": str,
        "float": float,
        "list": list,
        "set_dict": vars(BaseModel)["__dict__"].__set__,
        "set_fields_set": vars(BaseModel)["__pydantic_fields_set__"].__set__,
        "set_extra": vars(BaseModel)["__pydantic_extra__"].__set__,
        "set_private": vars(BaseModel)["__pydantic_private__"].__set__,
    }
    lines = [
        "def build(data):",
        f"    if len(data) != {len(names)}:",
        "        return None",
        "    try:",
        *(f"        {local[name]} = data[{name!r}]" for name in names),
        "    except KeyError:",
        "        return None",
    ]
    checks: list[str] = []
    if envelope:
        checks.append(f"type({local['id']}) is not str or not {local['id']}")
        checks.append(f"type({local['occurred_at']}) is not float")
        for name in ("actor", "correlation_id", "causation_id"):
            checks.append(f"({local[name]} is not None and type({local[name]}) is not str)")
    for k, (name, types) in enumerate(typed):
        var = local[name]
        kinds = [kind for kind in types if kind is not _NONE_TYPE]
        if len(kinds) == 1 and kinds[0] in (str, float) and len(types) <= 2:
            test = f"type({var}) is not {kinds[0].__name__}"
            checks.append(test if len(types) == 1 else f"({var} is not None and {test})")
        else:
            env[f"types{k}"] = types
            checks.append(f"type({var}) not in types{k}")
    for name, min_length in min_lengths:
        checks.append(f"len({local[name]}) < {min_length}")
    for name in str_lists:
        var = local[name]
        checks.append(f"type({var}) is not list or not all(type(item) is str for item in {var})")
    for check in checks:
        lines += [f"    if {check}:", "        return None"]
    lines += [
        "    event = new(cls)",
        "    set_dict(event, data)",
        "    set_fields_set(event, set(field_names))",
        "    set_extra(event, None)",
        "    set_private(event, None)",
        "    return event",
    ]
    exec("\n".join(lines), env)  # the code above, written from field names only
    build: _Builder = env["build"]
    return build


_OPTIONAL_STR = (str, _NONE_TYPE)
_ENVELOPE_CHECKS = (
    ("id", (str,)),
    ("occurred_at", (float,)),
    ("actor", _OPTIONAL_STR),
    ("correlation_id", _OPTIONAL_STR),
    ("causation_id", _OPTIONAL_STR),
)

_DECORATOR_KINDS = (
    "validators",
    "field_validators",
    "root_validators",
    "model_validators",
)
_SERIALIZER_KINDS = ("field_serializers", "model_serializers", "computed_fields")
_PLAIN_DUMP: dict[type[Event], bool] = {}


def _dumps_plainly(cls: type[Event]) -> bool:
    """Whether ``model_dump()`` of ``cls`` is its ``__dict__`` (JSON-wise).

    True for classes whose fields :func:`_fast_builder` accepts (plain JSON types or
    ``Any``), with no serializers, computed fields, aliases, excluded fields or extra
    fields: ``model_dump`` then returns the stored values (containers copied), which
    orjson writes as it writes the stored values themselves.
    """
    if _fast_builder(cls) is None or cls.model_config.get("extra") == "allow":
        return False
    if any(getattr(cls.__pydantic_decorators__, kind) for kind in _SERIALIZER_KINDS):
        return False
    return all(
        info.serialization_alias is None and not info.exclude for info in cls.model_fields.values()
    )


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
        # type and version lead the body too, so a body alone says what it is (a reader
        # strips them; bodies written before they were added read the same)
        body = None
        plain = _PLAIN_DUMP.get(type(event))
        if plain is None:
            plain = _PLAIN_DUMP[type(event)] = _dumps_plainly(type(event))
        if plain:
            # the stored values as they are: model_dump() would copy them first; a value
            # orjson does not take (a model inside an Any field) goes the model_dump way
            with contextlib.suppress(TypeError):
                body = orjson.dumps(
                    {BODY_TYPE: event.type, BODY_VERSION: event.version, **event.__dict__}
                )
        if body is None:
            body = orjson.dumps(
                {BODY_TYPE: event.type, BODY_VERSION: event.version, **event.model_dump()}
            )
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
    else:
        trace_headers = current_trace_headers()
        if trace_headers:
            headers.update(trace_headers)
    if extra_headers:
        headers.update(extra_headers)
    return body, headers


def _headers_from_body(data: object, headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers for a message that lacks the type headers, from its self-describing body."""
    try:
        body = orjson.loads(data) if isinstance(data, bytes | bytearray | memoryview) else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or BODY_TYPE not in body:
        raise DecodeError(
            f"message has no {HDR_EVENT_TYPE} header and its body names no {BODY_TYPE!r}; "
            f"{HDR_EVENT_TYPE} and {HDR_EVENT_VERSION} are required"
        )
    try:
        found = dict(headers or {})
    except Exception as exc:  # a hostile Mapping
        raise DecodeError(f"unreadable headers: {_exc_name(exc)}") from exc
    found[HDR_EVENT_TYPE] = str(body[BODY_TYPE])
    found.setdefault(HDR_EVENT_VERSION, str(body.get(BODY_VERSION, "")))
    return found


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
    if type(headers) is dict and type(data) is bytes:
        # Fast path: a registered type at its current version (no upcasting) with a
        # well-formed body. Anything else takes the checked path below, which gives
        # the same event or the DecodeError naming the problem.
        event = reg.decode_current(data, headers)
        if event is not None:
            return event
    if not headers or HDR_EVENT_TYPE not in headers:
        headers = _headers_from_body(data, headers)
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
    body_type = body.pop(BODY_TYPE, type_)
    body_version = body.pop(BODY_VERSION, version)
    if body_type != type_ or body_version != version:
        raise DecodeError(
            f"event {type_!r} v{version}: its body says {body_type!r} v{body_version!r}"
        )
    if "id" not in body:
        msg_id = headers.get(HDR_MSG_ID)
        if isinstance(msg_id, str) and msg_id:
            body["id"] = msg_id
    return reg.decode(type_, version, body)
