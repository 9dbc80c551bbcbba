"""A process of the cross-process trace test: a submitter or a worker, each with the
OpenTelemetry SDK and its in-memory exporter; prints what it saw as JSON lines.

Usage: ``python trace_peer.py submit URL NAMESPACE`` or
``python trace_peer.py work URL NAMESPACE (worker|decide)``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import orjson
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent
from converge.core.decisions import ClaimTask, Decision, ReportTask
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task, TaskState
from converge.network.transport.local import LocalTransport
from converge.observability.tracing import get_current_trace_id
from converge.runtime import AgentRuntime
from converge.runtime.worker import Worker
from events import JetStreamEventLog

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

seen_trace_ids: list[str | None] = []


class TracedWorker(Worker):
    objectives = ("traced",)

    async def handle(self, task: Task) -> dict[str, object]:
        seen_trace_ids.append(get_current_trace_id())
        return {"ok": True}


class TracedDecider(Agent):
    def __init__(self) -> None:
        super().__init__(Identity.generate())

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        for task in tasks:
            seen_trace_ids.append(get_current_trace_id())
            if task.state is TaskState.ASSIGNED and task.assigned_to == self.id:
                out.append(ReportTask(task.id, {"ok": True}))
            elif task.state is TaskState.PENDING:
                out.append(ClaimTask(task.id))
        return out


def emit(kind: str, **data: object) -> None:
    sys.stdout.write(orjson.dumps({"kind": kind, **data}).decode() + "\n")
    sys.stdout.flush()


def spans() -> list[dict[str, object]]:
    out = []
    for span in exporter.get_finished_spans():
        ctx = span.get_span_context()
        out.append(
            {
                "name": span.name,
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent": None if span.parent is None else format(span.parent.span_id, "016x"),
                "attributes": dict(span.attributes or {}),
            }
        )
    return out


async def submit(url: str, namespace: str) -> None:
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            with trace.get_tracer("test").start_as_current_span("user.submit") as span:
                task_id = await tm.submit(Task("traced", {"text": "follow me"}))
                trace_id = format(span.get_span_context().trace_id, "032x")
            emit("submitted", task_id=task_id, trace_id=trace_id)
            done = await tm.wait(task_id, timeout=60)
            emit("done", state=done.state.value, spans=spans())
    finally:
        await log.close()


async def work(url: str, namespace: str, model: str) -> None:
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            agent: Agent = TracedWorker() if model == "worker" else TracedDecider()
            runtime = AgentRuntime(
                agent,
                LocalTransport(agent.id),
                task_manager=tm,
                decision_log=log,
                tick_interval_sec=0.2,
            )
            reported = asyncio.Event()
            tm.add_listener(
                lambda recorded: reported.set() if recorded.event.type == "task.reported" else None
            )
            await runtime.start()
            try:
                emit("ready")
                async with asyncio.timeout(60):
                    await reported.wait()
            finally:
                await runtime.stop()
            emit("done", spans=spans(), seen=seen_trace_ids)
    finally:
        await log.close()


if __name__ == "__main__":
    role, url, namespace = sys.argv[1:4]
    if role == "submit":
        asyncio.run(submit(url, namespace))
    else:
        asyncio.run(work(url, namespace, sys.argv[4]))
