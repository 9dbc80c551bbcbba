"""OpenTelemetry spans for converge, and W3C trace context carried in NATS headers.

:func:`trace` opens a span on the global tracer provider when the application
configured one (``opentelemetry.trace.set_tracer_provider``); otherwise on a
private SDK provider with no exporter, so spans still get real ids and the
``traceparent`` header still links processes. :func:`inject_headers` writes the
current context into a headers dict (``traceparent``, ``tracestate``);
:func:`extract_context` reads it back on the receiving side::

    with trace("task.claim", task_id=task.id):
        headers = inject_headers({})
    ...
    with trace("task.handle", context=extract_context(msg.headers)):
        ...
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from converge.errors import DecodeError

__all__ = [
    "Span",
    "SpanExporter",
    "SpanHandle",
    "Trace",
    "extract_context",
    "get_current_span_id",
    "get_current_trace_id",
    "get_trace_id",
    "inject_headers",
    "new_trace_id",
    "register_span_exporter",
    "set_trace_id",
    "trace",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

TRACER_NAME = "converge"
_propagator = TraceContextTextMapPropagator()
_private_provider: otel_trace.TracerProvider | None = None


def _tracer() -> otel_trace.Tracer:
    """The configured provider's tracer; else a private SDK one; else the no-op tracer.

    The private provider (no exporter) gives explicit :func:`trace` blocks real ids
    when the application installed the SDK but configured nothing; without the SDK
    (the ``otel`` extra) spans are no-ops and cost next to nothing.
    """
    global _private_provider
    provider = otel_trace.get_tracer_provider()
    if not isinstance(provider, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider):
        return provider.get_tracer(TRACER_NAME)
    if _private_provider is None:
        try:
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:
            _private_provider = otel_trace.NoOpTracerProvider()
        else:
            _private_provider = TracerProvider(shutdown_on_exit=False)
    return _private_provider.get_tracer(TRACER_NAME)


def _attribute(value: object) -> str | bool | int | float | None:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)


class SpanHandle:
    """The span a :func:`trace` block runs in: ids as hex strings, plus the OTel span."""

    def __init__(self, name: str, span: otel_trace.Span, parent_id: str | None) -> None:
        self.name = name
        self.span = span
        ctx = span.get_span_context()
        self.trace_id = format(ctx.trace_id, "032x")
        self.span_id = format(ctx.span_id, "016x")
        self.parent_id = parent_id

    def set_attribute(self, key: str, value: object) -> None:
        """Set one attribute (non-primitive values are recorded as text; ``None`` is skipped)."""
        converted = _attribute(value)
        if converted is not None:
            self.span.set_attribute(key, converted)

    def add_event(self, name: str, **attributes: object) -> None:
        """Record a point-in-time event on the span."""
        attrs = {
            k: v for k, v in ((k, _attribute(v)) for k, v in attributes.items()) if v is not None
        }
        self.span.add_event(name, attributes=attrs)

    def __repr__(self) -> str:
        return (
            f"SpanHandle(name={self.name!r}, trace_id={self.trace_id!r}, span_id={self.span_id!r})"
        )


class SpanExporter(Protocol):
    """Receives every finished :func:`trace` span with its duration in seconds."""

    def export(self, span: SpanHandle, duration_sec: float) -> None: ...


_exporter: SpanExporter | None = None


def register_span_exporter(exporter: SpanExporter | None) -> None:
    """Call ``exporter.export(span, duration_sec)`` when each span ends (``None`` removes it).

    A lightweight hook for tests and simple setups; use OpenTelemetry span
    processors for real exporters. Exporter failures are logged, never raised.
    """
    global _exporter
    _exporter = exporter


class Trace:
    """A span to be: a context manager (``with``/``async with``) and a decorator.

    Made by :func:`trace`; each entry opens a new span, so one object may decorate
    a function that is called many times.
    """

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, object],
        context: otel_context.Context | None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise DecodeError(f"span name must be a non-empty str, got {name!r}")
        self.name = name
        self.attributes = dict(attributes)
        self.context = context
        self._stack: list[tuple[Any, SpanHandle, float]] = []

    def __enter__(self) -> SpanHandle:
        parent = otel_trace.get_current_span(self.context).get_span_context()
        parent_id = format(parent.span_id, "016x") if parent.is_valid else None
        attrs = {
            k: v
            for k, v in ((k, _attribute(v)) for k, v in self.attributes.items())
            if v is not None
        }
        manager = _tracer().start_as_current_span(self.name, context=self.context, attributes=attrs)
        span = manager.__enter__()
        handle = SpanHandle(self.name, span, parent_id)
        self._stack.append((manager, handle, time.monotonic()))
        return handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        manager, handle, started = self._stack.pop()
        try:
            manager.__exit__(exc_type, exc, tb)
        finally:
            exporter = _exporter
            if exporter is not None:
                try:
                    exporter.export(handle, time.monotonic() - started)
                except Exception:
                    logger.exception("span exporter %r failed for span %s", exporter, handle.name)

    async def __aenter__(self) -> SpanHandle:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with Trace(self.name, self.attributes, self.context):
                    return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            with Trace(self.name, self.attributes, self.context):
                return func(*args, **kwargs)

        return wrapper


def trace(name: str, *, context: otel_context.Context | None = None, **attributes: object) -> Trace:
    """Return a span named ``name`` with ``attributes``, to use with ``with`` or as a decorator.

    Inside a span, nested spans share its trace id. ``context`` (from
    :func:`extract_context`) makes the span a child of a remote parent. The span
    records an exception that escapes it. Raises ``DecodeError`` for an empty name.
    """
    return Trace(name, attributes, context)


def get_current_trace_id() -> str | None:
    """Return the current span's trace id (32 hex digits), or ``None`` outside a span."""
    ctx = otel_trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def get_current_span_id() -> str | None:
    """Return the current span's id (16 hex digits), or ``None`` outside a span."""
    ctx = otel_trace.get_current_span().get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else None


def inject_headers(
    headers: MutableMapping[str, str] | None = None,
    *,
    context: otel_context.Context | None = None,
) -> MutableMapping[str, str]:
    """Write the current (or given) trace context into ``headers`` and return them.

    Adds the W3C ``traceparent`` (and ``tracestate`` when set); outside a span it
    adds nothing. ``None`` starts a new dict. Raises ``DecodeError`` when
    ``headers`` is not a mutable mapping.
    """
    if headers is None:
        headers = {}
    if not isinstance(headers, MutableMapping):
        raise DecodeError(f"headers must be a dict, got {type(headers).__name__}")
    _propagator.inject(headers, context=context)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """Return the trace context carried in ``headers`` (a ``traceparent`` header).

    Missing or malformed headers give an empty context, so the next span starts a
    new trace. Header names match case-insensitively. Raises ``DecodeError`` when
    ``headers`` is not a mapping.
    """
    if headers is None:
        return otel_context.Context()
    if not isinstance(headers, Mapping):
        raise DecodeError(f"headers must be a dict, got {type(headers).__name__}")
    lowered = {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}
    return _propagator.extract(lowered, context=otel_context.Context())


# -- the seed's names: trace ids as strings, Span as a context manager ------------------


def new_trace_id() -> str:
    """Return a new random trace id: 32 lowercase hex digits (a W3C trace id)."""
    while True:
        value = secrets.token_hex(16)
        if int(value, 16):  # all zeros is the invalid trace id
            return value


def _trace_int(trace_id: str) -> int:
    text = trace_id.replace("-", "").lower() if isinstance(trace_id, str) else ""
    try:
        value = int(text, 16) if len(text) == 32 else 0
    except ValueError:
        value = 0
    if not value:
        raise DecodeError(
            f"trace id must be 32 hex digits (a W3C trace id or a UUID), got {trace_id!r}"
        )
    return value


def _remote_parent(trace_id: str, parent_id: str | None = None) -> otel_context.Context:
    try:
        span_id = int(parent_id, 16) if parent_id and len(parent_id) == 16 else 0
    except ValueError:  # the seed's ids were UUIDs: not a span id here
        span_id = 0
    span_id = span_id or int(secrets.token_hex(8), 16) or 1
    parent = otel_trace.NonRecordingSpan(
        otel_trace.SpanContext(
            trace_id=_trace_int(trace_id),
            span_id=span_id,
            is_remote=True,
            trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED),
        )
    )
    return otel_trace.set_span_in_context(parent, otel_context.Context())


def set_trace_id(trace_id: str | None = None) -> None:
    """Make ``trace_id`` the current trace (``None`` clears it), as the seed's call did.

    Spans opened afterwards in this context (``trace``, :class:`Span`) belong to that
    trace and ``inject_headers`` carries it. Accepts 32 hex digits or a UUID string;
    raises ``DecodeError`` otherwise.
    """
    otel_context.attach(otel_context.Context() if trace_id is None else _remote_parent(trace_id))


def get_trace_id() -> str | None:
    """Return the current trace id (32 hex digits), or ``None`` (the seed's name)."""
    return get_current_trace_id()


class Span:
    """The seed's span: ``with Span(trace_id, name="op") as span:`` runs in a real span.

    ``trace_id`` (default: the current one, else a new one) and ``parent_id`` (16 hex
    digits) place the span; inside the block it is the current span (``trace()``
    blocks nest under it) and ``span_id`` is its OpenTelemetry id (a ``span_id`` given
    to the constructor is kept only until then). Registered span exporters see it.
    """

    def __init__(
        self,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_id: str | None = None,
        name: str = "operation",
    ) -> None:
        self.trace_id = trace_id or get_current_trace_id() or new_trace_id()
        _trace_int(self.trace_id)
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self._trace: Trace | None = None

    def __enter__(self) -> Span:
        context = None
        if self.trace_id.replace("-", "").lower() != get_current_trace_id():
            context = _remote_parent(self.trace_id, self.parent_id)
        self._trace = Trace(self.name, {}, context)
        handle = self._trace.__enter__()
        self.trace_id, self.span_id = handle.trace_id, handle.span_id
        self.parent_id = self.parent_id or handle.parent_id
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entered, self._trace = self._trace, None
        if entered is not None:
            entered.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"Span(trace_id={self.trace_id!r}, span_id={self.span_id!r}, name={self.name!r})"
