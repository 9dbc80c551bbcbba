"""``tracing_enabled`` keeps its answer only while the global tracer provider stays the same."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from events.tracecontext import messaging_span, refresh_tracing, tracing_enabled


def test_tracing_follows_the_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    assert refresh_tracing() is False
    assert tracing_enabled() is False
    with messaging_span("send", "x") as span:
        assert span is None

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", TracerProvider())
    assert tracing_enabled() is True  # a new provider is seen without a refresh
    with messaging_span("send", "x") as span:
        assert span is not None and span.is_recording()

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    assert tracing_enabled() is False


def test_refresh_tracing_agrees_with_tracing_enabled() -> None:
    assert refresh_tracing() is tracing_enabled()
