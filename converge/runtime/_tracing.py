"""Spans of the runtime's work on a task, in the trace of the task's submission.

A task's ``task.submitted`` event carries the submitter's W3C trace context in its
headers (:mod:`events.tracecontext`); the task projection keeps it while the task is
open. Claiming, deciding on, handling and reporting a task happen in spans that are
children of that context, so one trace follows a task from the submitting process
across NATS into the worker's process, and the events the worker appends carry it on.
With no tracer provider configured these are no-ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace as otel_trace

from converge.coordination.task_manager import TaskManager
from converge.core.task import Task
from events.tracecontext import context_from_headers, messaging_span, tracing_enabled

__all__ = ["decide_span", "task_span"]


def task_span(
    tasks: object, operation: str, task_id: str, agent_id: str
) -> contextlib.AbstractContextManager[otel_trace.Span | None]:
    """A CONSUMER span ``"<operation> <ns>.tasks.<id>"`` continuing the task's trace."""
    if not tracing_enabled() or not isinstance(tasks, TaskManager):
        return contextlib.nullcontext()
    context = context_from_headers(tasks.projection.trace_headers(task_id))
    return messaging_span(
        operation,
        f"{tasks.event_log.namespace}.tasks.{task_id}",
        kind=otel_trace.SpanKind.CONSUMER,
        context=context,
        attributes={"converge.agent_id": agent_id, "converge.task_id": task_id},
    )


@contextlib.contextmanager
def decide_span(tasks: object, agent_id: str, offered: Sequence[Task]) -> Iterator[None]:
    """A span around ``decide``: a child of the first offered task's trace, linked to the rest."""
    if not tracing_enabled() or not isinstance(tasks, TaskManager):
        yield
        return
    projection = tasks.projection
    contexts = [
        ctx
        for task in offered
        if (ctx := context_from_headers(projection.trace_headers(task.id))) is not None
    ]
    links = [
        otel_trace.Link(otel_trace.get_current_span(ctx).get_span_context()) for ctx in contexts[1:]
    ]
    tracer = otel_trace.get_tracer("converge")
    with tracer.start_as_current_span(
        "decide",
        context=contexts[0] if contexts else None,
        links=links,
        attributes={"converge.agent_id": agent_id, "converge.tasks": len(offered)},
    ):
        yield
