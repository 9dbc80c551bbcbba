"""One trace follows a task from a submitting process into a worker process and back.

Each process runs the OpenTelemetry SDK with its in-memory exporter
(``trace_peer.py``); the worker's spans for the task must be in the submitter's trace,
as children (their parents are spans of that trace), for the worker model and for
``decide()`` agents; the events on the stream carry the trace in their headers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from events import JetStreamEventLog

pytestmark = [pytest.mark.asyncio, pytest.mark.nats, pytest.mark.slow]

PEER = Path(__file__).with_name("trace_peer.py")


async def _lines(proc: asyncio.subprocess.Process, kind: str) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        async with asyncio.timeout(90):
            raw = await proc.stdout.readline()
        if not raw:
            raise AssertionError(f"peer exited before printing {kind!r}")
        line = orjson.loads(raw)
        if line["kind"] == kind:
            return dict(line)


@pytest.mark.parametrize("model", ["worker", "decide"])
async def test_worker_spans_join_the_submitters_trace(
    nats_url: str, namespace: str, model: str
) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, str(PEER), "work", nats_url, namespace, model,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    submitter = None
    try:
        await _lines(worker, "ready")
        submitter = await asyncio.create_subprocess_exec(
            sys.executable, str(PEER), "submit", nats_url, namespace, stdout=subprocess.PIPE
        )
        submitted = await _lines(submitter, "submitted")
        trace_id = submitted["trace_id"]
        sub_done = await _lines(submitter, "done")
        work_done = await _lines(worker, "done")
        async with asyncio.timeout(60):
            assert await submitter.wait() == 0
            assert await worker.wait() == 0
    finally:
        for proc in (worker, submitter):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()

    assert sub_done["state"] == "completed"
    submitter_spans = {s["span_id"]: s for s in sub_done["spans"]}
    publish = [s for s in sub_done["spans"] if s["name"].startswith("publish ")]
    assert publish and all(s["trace_id"] == trace_id for s in publish)
    assert publish[0]["attributes"]["messaging.system"] == "nats"

    task_spans = [
        s
        for s in work_done["spans"]
        if s["attributes"].get("converge.task_id") == submitted["task_id"]
    ]
    assert task_spans, work_done["spans"]
    assert {s["trace_id"] for s in task_spans} == {trace_id}
    # children, not links: some worker span's parent is a span of the submitter
    assert any(s["parent"] in submitter_spans for s in task_spans)
    # the user's code ran inside that trace
    assert trace_id in work_done["seen"]

    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    try:
        carried = {
            rec.event.type: (rec.headers or {}).get("traceparent", "")
            async for rec in log.read(stream="tasks")
        }
    finally:
        await log.close()
    assert trace_id in carried["task.submitted"]
    assert trace_id in carried["task.claimed"]
    assert trace_id in carried["task.reported"]


async def test_nats_transport_carries_the_trace_to_the_receiver(
    nats_url: str, namespace: str
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from converge.core.message import Message
    from converge.network.transport.nats import NatsTransport

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    previous = trace._TRACER_PROVIDER  # this test's own provider, restored after
    trace._TRACER_PROVIDER = provider
    try:
        async with (
            NatsTransport("alice", nats_url, namespace=namespace) as alice,
            NatsTransport("bob", nats_url, namespace=namespace) as bob,
        ):
            with tracer.start_as_current_span("user.send") as span:
                await alice.send(Message(sender="alice", recipient="bob", payload={"n": 1}))
                trace_id = span.get_span_context().trace_id
            got = await bob.receive(timeout=30)
            assert got.payload == {"n": 1}
    finally:
        trace._TRACER_PROVIDER = previous
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send = spans["send bob"]
    receive = next(s for name, s in spans.items() if name.startswith("receive "))
    assert send.attributes is not None and send.attributes["messaging.system"] == "nats"
    assert send.context.trace_id == receive.context.trace_id == trace_id
    assert receive.parent is not None and receive.parent.span_id == send.context.span_id
