"""Tracing: spans, nesting, decorators, traceparent in headers, exporters."""

from __future__ import annotations

import asyncio
import re

import pytest

from converge.errors import DecodeError
from converge.observability.tracing import (
    SpanHandle,
    extract_context,
    get_current_span_id,
    get_current_trace_id,
    inject_headers,
    register_span_exporter,
    trace,
)

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def test_nested_spans_share_the_trace() -> None:
    assert get_current_trace_id() is None
    with trace("op1") as span:
        assert re.fullmatch(r"[0-9a-f]{32}", span.trace_id)
        assert get_current_trace_id() == span.trace_id
        assert get_current_span_id() == span.span_id
        with trace("op2") as child:
            assert child.trace_id == span.trace_id
            assert child.parent_id == span.span_id
            assert child.span_id != span.span_id
    assert get_current_trace_id() is None


def test_separate_spans_get_separate_traces() -> None:
    with trace("a") as a:
        pass
    with trace("b") as b:
        pass
    assert a.trace_id != b.trace_id
    assert a.parent_id is None


def test_headers_carry_the_context_across() -> None:
    with trace("send", task_id="t1") as sender:
        headers = inject_headers({"Nats-Msg-Id": "x"})
    assert TRACEPARENT.match(headers["traceparent"])
    assert headers["Nats-Msg-Id"] == "x"
    with trace("receive", context=extract_context(headers)) as receiver:
        assert receiver.trace_id == sender.trace_id
        assert receiver.parent_id == sender.span_id


def test_header_names_match_case_insensitively() -> None:
    with trace("send") as sender:
        headers = inject_headers()
    with trace("receive", context=extract_context({"TraceParent": headers["traceparent"]})) as r:
        assert r.trace_id == sender.trace_id


def test_outside_a_span_nothing_is_injected() -> None:
    assert inject_headers({}) == {}


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
    ],
)
def test_missing_or_bad_traceparent_starts_a_new_trace(headers: dict[str, str] | None) -> None:
    with trace("receive", context=extract_context(headers)) as span:
        assert span.parent_id is None


def test_bad_header_containers() -> None:
    with pytest.raises(DecodeError, match="headers must be a dict"):
        extract_context(["traceparent"])  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="headers must be a dict"):
        inject_headers(("x",))  # type: ignore[arg-type]


def test_bad_span_name() -> None:
    with pytest.raises(DecodeError, match="span name"):
        trace("")


def test_decorates_sync_and_async_functions() -> None:
    seen: list[str | None] = []

    @trace("work", kind="sync")
    def work(x: int) -> int:
        seen.append(get_current_trace_id())
        return x * 2

    @trace("async-work")
    async def async_work(x: int) -> int:
        await asyncio.sleep(0)
        seen.append(get_current_trace_id())
        return x + 1

    assert work(2) == 4
    assert work(3) == 6
    assert asyncio.run(async_work(1)) == 2
    assert all(seen) and len(set(seen)) == 3


@pytest.mark.asyncio
async def test_async_with() -> None:
    async with trace("op") as span:
        assert get_current_trace_id() == span.trace_id


def test_exporter_gets_every_span_and_errors_propagate() -> None:
    exported: list[tuple[str, float]] = []

    class Capture:
        def export(self, span: SpanHandle, duration_sec: float) -> None:
            exported.append((span.name, duration_sec))

    register_span_exporter(Capture())
    try:
        with trace("ok") as span:
            span.set_attribute("n", 1)
            span.set_attribute("obj", object())
            span.add_event("step", detail={"a": 1})
        with pytest.raises(ValueError, match="boom"), trace("fails"):
            raise ValueError("boom")
    finally:
        register_span_exporter(None)
    assert [name for name, _ in exported] == ["ok", "fails"]
    assert all(d >= 0 for _, d in exported)


def test_failing_exporter_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def export(self, span: SpanHandle, duration_sec: float) -> None:
            raise RuntimeError("exporter down")

    register_span_exporter(Broken())
    try:
        with trace("op"):
            pass
    finally:
        register_span_exporter(None)
    assert "exporter" in caplog.text
