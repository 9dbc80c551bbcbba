"""W3C trace context on events, through the OpenTelemetry API alone (no SDK needed).

An append inside an active span writes ``traceparent`` (and ``tracestate`` and
``baggage`` when set) into the event's NATS headers, so a consumer in another process
continues the same trace. Spans are only made when the application configured a
tracer provider (``opentelemetry.trace.set_tracer_provider``, as
``converge.observability.otel.configure_tracing`` does); without one, tracing costs a
type check per append. Span names and attributes follow OpenTelemetry's messaging
semantic conventions: ``messaging.system=nats``, the subject as the destination, the
event id as the message id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace

__all__ = [
    "TRACE_HEADERS",
    "context_from_headers",
    "current_trace_headers",
    "messaging_span",
    "refresh_tracing",
    "tracing_enabled",
]

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
"""The headers that carry a trace context between processes."""

_TRACER = "converge"


_UNKNOWN = object()
_enabled: tuple[object, bool] = (_UNKNOWN, False)  # (the global provider seen, tracing on)


def tracing_enabled() -> bool:
    """Whether the application configured a tracer provider (so spans are recorded).

    Called several times per message, so the answer is kept until the global provider
    changes (``set_tracer_provider``, or a test swapping it). OpenTelemetry's
    ``get_tracer_provider`` reads ``os.environ`` on every call while none is set; a
    process that sets ``OTEL_PYTHON_TRACER_PROVIDER`` after the first call calls
    :func:`refresh_tracing`.
    """
    seen, enabled = _enabled
    if seen is not _UNKNOWN and seen is getattr(otel_trace, "_TRACER_PROVIDER", _UNKNOWN):
        return enabled
    return refresh_tracing()


def refresh_tracing() -> bool:
    """Work out :func:`tracing_enabled` again from the global provider and the environment."""
    global _enabled
    provider = otel_trace.get_tracer_provider()
    enabled = not isinstance(
        provider, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider
    )
    _enabled = (getattr(otel_trace, "_TRACER_PROVIDER", _UNKNOWN), enabled)
    return enabled


def current_trace_headers() -> dict[str, str] | None:
    """Return the W3C headers of the current span, or ``None`` outside a valid span."""
    if not otel_trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def context_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """Return the trace context carried in ``headers``, or ``None`` when they carry none."""
    if not headers or "traceparent" not in headers:
        return None
    carrier = {k: headers[k] for k in TRACE_HEADERS if k in headers}
    return propagate.extract(carrier)


@contextlib.contextmanager
def messaging_span(
    operation: str,
    destination: str,
    *,
    message_id: str | None = None,
    kind: otel_trace.SpanKind = otel_trace.SpanKind.PRODUCER,
    context: otel_context.Context | None = None,
    system: str = "nats",
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[otel_trace.Span | None]:
    """Open the span ``"<operation> <destination>"`` as the current one; ``None`` when off.

    ``operation`` is the messaging operation (``publish``, ``send``, ``receive``,
    ``process``); ``context`` makes the span a child of a remote parent (from
    :func:`context_from_headers`). An exception escaping the block is recorded.
    """
    if not tracing_enabled():
        yield None
        return
    attrs: dict[str, str | int | float | bool] = {
        "messaging.system": system,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
    }
    if message_id is not None:
        attrs["messaging.message.id"] = message_id
    if attributes:
        attrs.update(attributes)
    tracer = otel_trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(
        f"{operation} {destination}", context=context, kind=kind, attributes=attrs
    ) as span:
        yield span
