"""Seed-design calls on protocols and managers backed by a real JetStream server."""

from __future__ import annotations

import pytest

from converge.coordination.negotiation import NegotiationProtocol, NegotiationState
from converge.coordination.task_manager import TaskManager
from converge.core.task import Task, TaskState
from events import JetStreamEventLog

pytestmark = pytest.mark.nats


@pytest.mark.asyncio
async def test_seed_negotiation_and_task_flow_seen_from_a_second_connection(
    nats_url: str, namespace: str
) -> None:
    first = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    second = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    try:
        writer = NegotiationProtocol(first)
        sid = await writer.create_session("agentA", ["agentB"], {"price": 100})
        assert await writer.propose(sid, "agentB", {"price": 90})
        reader = NegotiationProtocol(second)
        assert await reader.accept(sid, "agentA")  # catches up, then accepts
        await writer.sync()
        session = writer.get_session(sid)
        assert session is not None and session.state is NegotiationState.ACCEPTED
        assert session.agreement == {"price": 90}

        tasks_a, tasks_b = TaskManager(first), TaskManager(second)
        task = Task(objective={"job": "x"})
        await tasks_a.submit(task)
        assert await tasks_b.claim("agent-b", task.id)
        with pytest.raises(ValueError, match="not authorized"):
            await tasks_a.report("agent-a", task.id, "nope")
        await tasks_b.report("agent-b", task.id, {"ok": True})
        await tasks_a.sync()
        done = tasks_a.get_task(task.id)
        assert done is not None and done.state is TaskState.COMPLETED
        for service in (writer, reader, tasks_a, tasks_b):
            await service.stop()
    finally:
        await first.close()
        await second.close()
