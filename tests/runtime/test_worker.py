"""The worker model in one process: claim, handle, report, fail, retry, timeout, heartbeat.

Each test waits on events (``TaskManager.wait`` or a listener), never on the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent
from converge.core.decisions import ClaimTask, Decision
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task, TaskState
from converge.errors import ConfigError, ConvergeTimeoutError, NotFoundError
from converge.lifecycle import AsyncService
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime
from converge.runtime.deps import RuntimeDeps, TaskService
from converge.runtime.worker import Worker
from events import EventLog, MemoryEventLog, RecordedEvent

WAIT = 30.0


class Upper(Worker):
    capabilities = ["text"]
    max_concurrency = 3

    async def handle(self, task: Task) -> dict[str, str]:
        return {"text": str(task.inputs["text"]).upper()}


class SyncUpper(Worker):
    capabilities = ["text"]

    def handle(self, task: Task) -> str:
        return str(task.inputs["text"]).upper()


class Flaky(Worker):
    """Fails the first ``failures`` attempts at every task."""

    failures = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def handle(self, task: Task) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ValueError(f"attempt {self.calls} broke")
        return "fine"


class Gate(Worker):
    """Blocks in ``handle`` until the test opens ``gate``."""

    def __init__(self, *, inside: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.all_inside = asyncio.Event()  # set once ``inside`` calls wait at the gate
        self._want = inside
        self._inside = 0

    async def handle(self, task: Task) -> str:
        self._inside += 1
        if self._inside >= self._want:
            self.all_inside.set()
        await self.gate.wait()
        return "opened"


@asynccontextmanager
async def running(agent: Agent, tm: TaskManager, **kwargs: Any) -> AsyncIterator[AgentRuntime]:
    runtime = AgentRuntime(
        agent, LocalTransport(agent.id, LocalTransportRegistry()), task_manager=tm, **kwargs
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def events_of(log: EventLog, task_id: str) -> list[str]:
    return [r.event.type async for r in log.read(stream="tasks") if _task_id(r) == task_id]


def _task_id(recorded: RecordedEvent) -> str | None:
    event = recorded.event
    task = getattr(event, "task", None)
    if isinstance(task, dict):
        return str(task["id"])
    value = getattr(event, "task_id", None)
    return value if isinstance(value, str) else None


@pytest.mark.asyncio
async def test_a_worker_takes_what_it_can_and_reports_results() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        worker = Upper()
        async with running(worker, tm):
            mine = [
                await tm.submit(Task("up", {"text": f"t{i}"}, required_capabilities=["text"]))
                for i in range(7)
            ]
            other = await tm.submit(Task("x", {"text": "no"}, required_capabilities=["image"]))
            done = [await tm.wait(task_id, timeout=WAIT) for task_id in mine]
            assert [t.result for t in done] == [{"text": f"T{i}"} for i in range(7)]
            assert {t.assigned_to for t in done} == {worker.id}
            assert tm.get_task(other).state is TaskState.PENDING  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_plain_def_handle_runs_off_the_loop() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm, running(SyncUpper(), tm):
        task_id = await tm.submit(Task("up", {"text": "abc"}))
        assert (await tm.wait(task_id, timeout=WAIT)).result == "ABC"


@pytest.mark.asyncio
async def test_objectives_and_pool_pick_the_tasks() -> None:
    class Picky(Upper):
        objectives = ["up"]
        pool_id = "docs"

    async with MemoryEventLog() as log, TaskManager(log) as tm, running(Picky(), tm):
        wrong_objective = await tm.submit(Task("down", {"text": "a"}, pool_id="docs"))
        wrong_pool = await tm.submit(Task("up", {"text": "a"}, pool_id="other"))
        right = await tm.submit(Task("up", {"text": "a"}, pool_id="docs"))
        assert (await tm.wait(right, timeout=WAIT)).state is TaskState.COMPLETED
        for task_id in (wrong_objective, wrong_pool):
            assert tm.get_task(task_id).state is TaskState.PENDING  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_raising_handle_fails_the_task_with_a_structured_reason() -> None:
    class Broken(Worker):
        async def handle(self, task: Task) -> None:
            raise KeyError("missing input")

    async with MemoryEventLog() as log, TaskManager(log) as tm, running(Broken(), tm):
        task_id = await tm.submit(Task("x"))
        task = await tm.wait(task_id, timeout=WAIT)
    assert task.state is TaskState.FAILED
    assert task.result == {"error": "KeyError", "message": "'missing input'", "attempt": 1}


@pytest.mark.asyncio
async def test_retries_put_the_task_back_until_it_succeeds() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        worker = Flaky()
        async with running(worker, tm):
            task_id = await tm.submit(Task("x", constraints={"max_retries": 2}))
            task = await tm.wait(task_id, timeout=WAIT)
        assert task.state is TaskState.COMPLETED
        assert task.result == "fine"
        assert tm.projection.attempts(task_id) == 2
        history = await events_of(log, task_id)
    assert history == [
        "task.submitted",
        "task.claimed",
        "task.retry_scheduled",
        "task.claimed",
        "task.retry_scheduled",
        "task.claimed",
        "task.reported",
    ]


@pytest.mark.asyncio
async def test_retries_spent_fail_the_task_with_the_last_attempt() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        worker = Flaky()
        async with running(worker, tm):
            task_id = await tm.submit(Task("x", constraints={"max_retries": 1}))
            task = await tm.wait(task_id, timeout=WAIT)
        retries = [r.event async for r in log.read(stream="tasks")]
    assert task.state is TaskState.FAILED
    assert task.result == {"error": "ValueError", "message": "attempt 2 broke", "attempt": 2}
    scheduled = [e for e in retries if e.type == "task.retry_scheduled"]
    assert [e.attempt for e in scheduled] == [1]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_timeout_sec_cancels_handle_and_fails_the_attempt() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        worker = Gate()
        async with running(worker, tm):
            task_id = await tm.submit(Task("x", constraints={"timeout_sec": 0.2}))
            task = await tm.wait(task_id, timeout=WAIT)
    assert task.state is TaskState.FAILED
    assert task.result["error"] == "TimeoutError"
    assert "0.2s" in task.result["message"]
    assert task.result["attempt"] == 1


@pytest.mark.asyncio
async def test_heartbeats_keep_a_long_task_with_its_live_worker() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        worker = Gate()
        beats = 0
        enough = asyncio.Event()

        def on_event(recorded: RecordedEvent) -> None:
            nonlocal beats
            if recorded.event.type == "task.claim_extended":
                beats += 1
                if beats >= 4:  # well past the TTL of the first claim
                    enough.set()

        tm.add_listener(on_event)
        async with running(worker, tm, claim_sweep_interval_sec=0.1):
            task_id = await tm.submit(Task("x", constraints={"claim_ttl_sec": 0.3}))
            async with asyncio.timeout(WAIT):
                await enough.wait()
            assert await tm.release_expired_claims() == []
            assert tm.get_task(task_id).assigned_to == worker.id  # type: ignore[union-attr]
            worker.gate.set()
            task = await tm.wait(task_id, timeout=WAIT)
        assert task.state is TaskState.COMPLETED
        history = await events_of(log, task_id)
    assert history.count("task.claimed") == 1
    assert "task.claim_released" not in history


@pytest.mark.asyncio
async def test_a_dead_holders_claim_expires_and_the_worker_takes_the_task() -> None:
    async with MemoryEventLog() as log, TaskManager(log, default_claim_ttl_sec=0.2) as tm:
        task_id = await tm.submit(Task("up", {"text": "late"}))
        assert await tm.claim("ghost", task_id)  # a holder that never comes back
        assert tm.projection.claim_ttl(task_id) == 0.2
        async with running(Upper(), tm, claim_sweep_interval_sec=0.1):
            task = await tm.wait(task_id, timeout=WAIT)
        assert task.result == {"text": "LATE"}
        released = [r.event async for r in log.read(stream="tasks")]
    assert [e.reason for e in released if e.type == "task.claim_released"] == ["expired"]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_stop_drains_then_releases_every_claim() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        worker = Gate(inside=2, max_concurrency=2)
        task_ids = [await tm.submit(Task("x")) for _ in range(3)]
        async with running(worker, tm, drain_timeout_sec=0.2):
            async with asyncio.timeout(WAIT):
                await worker.all_inside.wait()
            assert len(tm.list_tasks_held_by(worker.id)) == 2
        assert tm.list_tasks_held_by(worker.id) == []
        assert all(tm.get_task(t).state is TaskState.PENDING for t in task_ids)  # type: ignore[union-attr]
        reasons = [
            r.event.reason  # type: ignore[attr-defined]
            async for r in log.read(stream="tasks")
            if r.event.type == "task.claim_released"
        ]
    assert reasons == ["shutdown", "shutdown"]


@pytest.mark.asyncio
async def test_decide_agents_also_receive_the_tasks_they_hold() -> None:
    seen: list[list[str]] = []

    class Holder(Agent):
        def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
            seen.append([t.state.value for t in tasks])
            return []

    async with MemoryEventLog() as log, TaskManager(log) as tm:
        agent = Holder(Identity.generate())
        held = await tm.submit(Task("held"))
        await tm.submit(Task("free"))
        assert await tm.claim(agent.id, held)
        async with running(agent, tm, tick_interval_sec=0.05) as runtime:
            await runtime.tick()
        assert seen[-1][-2:] == ["pending", "assigned"] or seen[-1] == ["pending", "assigned"]
        # the runtime released the held claim when it stopped
        assert tm.get_task(held).state is TaskState.PENDING  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_wait_times_out_and_refuses_unknown_ids() -> None:
    async with TaskManager() as tm:
        task_id = await tm.submit(Task("x"))
        with pytest.raises(ConvergeTimeoutError, match=task_id):
            await tm.wait(task_id, timeout=0.05)
        with pytest.raises(NotFoundError, match="nope"):
            await tm.wait("nope", timeout=1)
        assert await tm.cancel_task(task_id)
        assert (await tm.wait(task_id)).state is TaskState.CANCELLED


@pytest.mark.asyncio
async def test_wait_returns_when_another_writer_finishes_the_task() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as waiter, TaskManager(log) as doer:
        task_id = await waiter.submit(Task("x"))
        waiting = asyncio.create_task(waiter.wait(task_id, timeout=WAIT))
        await doer.sync()
        assert await doer.claim("a", task_id)
        await doer.report("a", task_id, 42)
        assert (await waiting).result == 42


def test_a_worker_must_override_handle_and_have_sane_settings() -> None:
    class Lazy(Worker):
        pass

    with pytest.raises(ConfigError, match="handle"):
        Lazy()
    with pytest.raises(ConfigError, match="max_concurrency"):
        Upper(max_concurrency=0)
    with pytest.raises(ConfigError, match="objectives"):
        Upper(objectives="up")


@pytest.mark.asyncio
async def test_one_deps_object_or_the_keywords_not_both() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        agent = Upper()
        transport = LocalTransport(agent.id, LocalTransportRegistry())
        deps = RuntimeDeps(task_manager=tm)
        runtime = AgentRuntime(agent, transport, deps=deps)
        assert runtime.task_manager is tm and runtime.deps is deps
        assert isinstance(tm, TaskService)
        assert agent.task_manager is tm  # the seed design's attribute, declared on Agent
        with pytest.raises(ConfigError, match="deps"):
            AgentRuntime(agent, transport, deps=deps, task_manager=tm)
        async with runtime:
            task_id = await tm.submit(Task("up", {"text": "d"}))
            assert (await tm.wait(task_id, timeout=WAIT)).result == {"text": "D"}


def test_the_runtime_composes_its_parts_instead_of_inheriting_them() -> None:
    assert AgentRuntime.__mro__[1:] == (*AsyncService.__mro__,)


@pytest.mark.asyncio
async def test_a_decide_agent_keeps_the_claims_it_holds_while_alive() -> None:
    class Hoarder(Agent):
        def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
            return [ClaimTask(t.id) for t in tasks if t.state is TaskState.PENDING]

    async with MemoryEventLog() as log, TaskManager(log) as tm:
        agent = Hoarder(Identity.generate())
        beats = 0
        enough = asyncio.Event()

        def on_event(recorded: RecordedEvent) -> None:
            nonlocal beats
            if recorded.event.type == "task.claim_extended":
                beats += 1
                if beats >= 4:  # past the TTL of the claim
                    enough.set()

        tm.add_listener(on_event)
        async with running(agent, tm, claim_sweep_interval_sec=0.1, tick_interval_sec=0.05):
            task_id = await tm.submit(Task("x", constraints={"claim_ttl_sec": 0.3}))
            async with asyncio.timeout(WAIT):
                await enough.wait()
            assert await tm.release_expired_claims() == []
            assert tm.get_task(task_id).assigned_to == agent.id  # type: ignore[union-attr]
        assert tm.get_task(task_id).state is TaskState.PENDING  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_claim_that_breaks_unexpectedly_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        claim = tm.claim
        breaks: list[BaseException] = [RuntimeError("bug in a claim"), OSError("socket gone")]

        async def breaking_claim(agent_id: str, task_id: str) -> bool:
            if breaks:
                raise breaks.pop(0)
            return await claim(agent_id, task_id)

        tm.claim = breaking_claim  # type: ignore[method-assign]
        worker = Upper(max_concurrency=1)
        async with running(worker, tm):
            ids = [
                await tm.submit(Task("up", {"text": f"t{i}"}, required_capabilities=["text"]))
                for i in range(3)
            ]
            done = [await tm.wait(task_id, timeout=WAIT) for task_id in ids]
        assert [t.state for t in done] == [TaskState.COMPLETED] * 3
        assert not breaks
        ours = [r for r in caplog.records if r.name.startswith("converge.")]
        assert any(r.levelname == "ERROR" and "bug in a claim" in r.getMessage() for r in ours)
        assert any(r.levelname == "WARNING" and "socket gone" in r.getMessage() for r in ours)
