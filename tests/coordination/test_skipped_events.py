"""A message that is never folded (garbage bytes, a forged signature) on a task's subject
still moves the task's version: the task stays claimable and the skip is recorded."""

from __future__ import annotations

import nats
import pytest

from converge.coordination import TaskManager
from converge.core import Task, TaskState
from converge.network.identity_registry import IdentityRegistry
from events import EventLog, EventSigner, MemoryEventLog, TaskClaimed, encode_event, subject
from events.signing import HDR_SIGNATURE, HDR_SIGNER
from projections import SignatureVerifier

GARBAGE = b"\x00\xffnot json at all"


async def publish_raw(
    log: EventLog, backend: str | None, subj: str, body: bytes, headers: dict[str, str] | None
) -> None:
    """Store ``body`` on ``subj`` as any NATS client could, bypassing the log's checks."""
    if backend is None:
        assert isinstance(log, MemoryEventLog)
        log.append_raw(subj, body, headers)
        return
    nc = await nats.connect(backend)
    try:
        await nc.jetstream().publish(f"{log.namespace}.{subj}", body, headers=headers)
    finally:
        await nc.close()


@pytest.mark.asyncio
async def test_garbage_on_a_task_subject_keeps_the_task_claimable(
    event_log: EventLog, backend: str | None
) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("o"))
        subj = subject("tasks", task_id)
        await publish_raw(event_log, backend, subj, GARBAGE, None)
        await publish_raw(event_log, backend, subj, b"{}", {"Converge-Event-Type": "no.such"})
        assert await tm.claim("a", task_id)
        task = tm.get_task(task_id)
        assert task is not None and (task.state, task.assigned_to) == (TaskState.ASSIGNED, "a")
        last = await event_log.last_sequence(stream="tasks", subject=subj)
        assert tm.projection.version(subj) == last
        skips = [s for s in tm.projection.recent_skips if s.subject == subj]
        assert [s.reason for s in skips] == ["undecodable"]
        assert skips[0].sequence == last - 1  # the second raw message, just before the claim
        assert tm.projection.skipped_by_stream == {"tasks": 1}
        await tm.report("a", task_id, 1)
        assert tm.get_task(task_id) is not None
        assert event_log.skipped_events >= 1

    # a fresh manager reads past both messages and still commands the task
    async with TaskManager(event_log) as again:
        await again.sync()
        task = again.get_task(task_id)
        assert task is not None and task.state is TaskState.COMPLETED


@pytest.mark.asyncio
async def test_garbage_before_a_release_and_a_cancel(
    event_log: EventLog, backend: str | None
) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("o", constraints={"claim_ttl_sec": 1}))
        assert await tm.claim("a", task_id)
        await publish_raw(event_log, backend, subject("tasks", task_id), GARBAGE, None)
        task = tm.get_task(task_id)
        assert task is not None and task.claimed_at is not None
        assert await tm.release_expired_claims(now=task.claimed_at + 5) == [task_id]
        await publish_raw(event_log, backend, subject("tasks", task_id), GARBAGE, None)
        assert await tm.cancel_task(task_id)


@pytest.mark.asyncio
async def test_a_forged_event_moves_the_version_too(
    backend: str | None, log_factory: object, namespace: str
) -> None:
    writer = EventSigner(bytes(range(32)), key_id="agent-a")
    registry = IdentityRegistry()
    registry.register("agent-a", writer.public_key)
    assert callable(log_factory)
    log: EventLog = await log_factory(namespace, writer)
    try:
        verifier = SignatureVerifier(registry.get)
        async with TaskManager(log, verifier=verifier) as tm:
            task_id = await tm.submit(Task("o"))
            subj = subject("tasks", task_id)
            forged = TaskClaimed(task_id=task_id, agent_id="mallory", claimed_at=0.0)
            body, headers = encode_event(forged)
            headers[HDR_SIGNER] = "agent-a"
            headers[HDR_SIGNATURE] = EventSigner(bytes(range(1, 33)), key_id="agent-a").sign(
                subj, body, forged.type
            )
            await publish_raw(log, backend, subj, body, headers)
            await tm.sync()
            assert tm.runner.rejected_events == 1
            assert [s.reason for s in tm.projection.recent_skips] == [
                "signature rejected: bad-signature"
            ]
            assert await tm.claim("agent-a", task_id)  # the signer claims for itself
            assert tm.conflicts == 0  # the version moved when the forgery was rejected
    finally:
        await log.close()


@pytest.mark.parametrize("attempts", [0, -1, True])
def test_max_attempts_is_checked(attempts: object) -> None:
    from converge.errors import ConfigError

    with pytest.raises(ConfigError, match="max_attempts"):
        from converge.service import ProjectedService
        from projections import TaskProjection

        ProjectedService(TaskProjection(), None, max_attempts=attempts)  # type: ignore[arg-type]


@pytest.mark.nats
def test_projections_status_counts_garbage(nats_url: str, namespace: str) -> None:
    import asyncio

    import orjson
    from typer.testing import CliRunner

    from converge.cli import app
    from events import JetStreamEventLog

    async def write() -> None:
        log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
        try:
            async with TaskManager(log) as tm:
                task_id = await tm.submit(Task("o"))
                await publish_raw(log, nats_url, subject("tasks", task_id), GARBAGE, None)
                assert await tm.claim("a", task_id)
        finally:
            await log.close()

    asyncio.run(write())
    result = CliRunner().invoke(
        app, ["projections", "status", "--url", nats_url, "--namespace", namespace]
    )
    assert result.exit_code == 0, result.output
    status = orjson.loads(result.stdout)
    assert status["skipped"] == {"tasks": 1, "pools": 0}
    assert status["tasks"]["by_state"] == {"assigned": 1}
