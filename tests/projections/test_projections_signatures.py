"""Signature checks in projections: forged events are skipped and counted, on every backend."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats
import pytest

from converge.core import Task, TaskState
from converge.errors import ConfigError
from converge.network.identity_registry import IdentityRegistry
from events import (
    Event,
    EventLog,
    EventSigner,
    MemoryEventLog,
    RecordedEvent,
    TaskClaimed,
    TaskSubmitted,
    encode_event,
)
from events.signing import HDR_SIGNATURE, HDR_SIGNER
from projections import ProjectionRunner, SignatureVerifier, TaskProjection

FORGER_KEY = bytes(range(1, 33))


@pytest.fixture
def registry(signer: EventSigner) -> IdentityRegistry:
    registry = IdentityRegistry()
    registry.register("agent-a", signer.public_key)
    return registry


def submitted(task_id: str) -> TaskSubmitted:
    return TaskSubmitted(task=Task("k", {"id": task_id}, id=task_id).to_dict())


async def forge(
    log: EventLog,
    backend: str | None,
    subj: str,
    event: Event,
    *,
    key_id: str = "agent-a",
    key: bytes = FORGER_KEY,
) -> None:
    """Store ``event`` signed with ``key`` but claiming ``key_id``, bypassing the log's signer."""
    body, headers = encode_event(event)
    headers[HDR_SIGNER] = key_id
    headers[HDR_SIGNATURE] = EventSigner(key, key_id=key_id).sign(subj, body, event.type)
    if backend is None:
        assert isinstance(log, MemoryEventLog)
        log.append_raw(subj, body, headers)
        return
    nc = await nats.connect(backend)
    try:
        await nc.jetstream().publish(f"{log.namespace}.{subj}", body, headers=headers)
    finally:
        await nc.close()


def record(
    event: Event, headers: dict[str, str] | None, body: bytes | None = None
) -> RecordedEvent:
    return RecordedEvent(event, "tasks", "tasks.t1", 1, 0.0, headers, body)


# -- the verifier alone ----------------------------------------------------------------------


def test_verifier_accepts_a_good_signature(signer: EventSigner, registry: IdentityRegistry) -> None:
    event = submitted("t1")
    body = encode_event(event)[0]
    verifier = SignatureVerifier(registry.get)
    assert verifier.check(record(event, signer.headers("tasks.t1", body, event.type), body))
    # without the raw body it re-encodes the event (deterministic)
    assert verifier(record(event, signer.headers("tasks.t1", body, event.type)))
    assert (verifier.accepted, verifier.rejected, verifier.unsigned) == (2, 0, 0)


def test_verifier_rejects_and_logs(
    signer: EventSigner, registry: IdentityRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    event = submitted("t1")
    body = encode_event(event)[0]
    good = signer.headers("tasks.t1", body, event.type)
    verifier = SignatureVerifier(registry.get)
    cases = [
        {
            **good,
            HDR_SIGNATURE: EventSigner(FORGER_KEY, key_id="agent-a").sign(
                "tasks.t1", body, event.type
            ),
        },
        {**good, HDR_SIGNER: "stranger"},
        {HDR_SIGNER: "agent-a"},
        {HDR_SIGNATURE: good[HDR_SIGNATURE]},
        {**good, HDR_SIGNATURE: "not base64!"},
        signer.headers("tasks.t2", body, event.type),  # signed for another subject
        signer.headers("tasks.t1", body, "task.claimed"),  # signed as another type
    ]
    with caplog.at_level(logging.WARNING, logger="projections.verify"):
        for headers in cases:
            assert not verifier.check(record(event, headers, body))
    assert verifier.rejected == len(cases) and verifier.accepted == 0
    assert "stream tasks seq 1" in caplog.text
    assert "'stranger' is not a key fingerprint" in caplog.text
    assert "does not verify" in caplog.text


def test_verifier_unsigned_events_pass_unless_required(registry: IdentityRegistry) -> None:
    event = submitted("t1")
    lenient = SignatureVerifier(registry.get)
    strict = SignatureVerifier(registry.get, require=True)
    for headers in (None, {}, {"Converge-Event-Type": "task.submitted"}):
        assert lenient.check(record(event, headers))
        assert not strict.check(record(event, headers))
    assert lenient.unsigned == 3 and strict.rejected == 3


def test_verifier_key_lookup_errors_count_as_unknown(signer: EventSigner) -> None:
    def broken(key_id: str) -> bytes | None:
        raise RuntimeError("registry down")

    event = submitted("t1")
    body = encode_event(event)[0]
    verifier = SignatureVerifier(broken)
    assert not verifier.check(record(event, signer.headers("tasks.t1", body, event.type), body))
    assert verifier.rejected == 1


def test_verifier_match_actor(signer: EventSigner, registry: IdentityRegistry) -> None:
    mine = TaskClaimed(task_id="t1", agent_id="agent-a", claimed_at=1.0, actor="agent-a")
    theirs = TaskClaimed(task_id="t1", agent_id="agent-b", claimed_at=1.0, actor="agent-b")
    verifier = SignatureVerifier(registry.get, match_actor=True)
    for event, ok in ((mine, True), (theirs, False)):
        body = encode_event(event)[0]
        headers = signer.headers("tasks.t1", body, event.type)
        assert verifier.check(record(event, headers, body)) is ok
    lax = SignatureVerifier(registry.get, match_actor=False)
    body = encode_event(theirs)[0]
    assert lax.check(record(theirs, signer.headers("tasks.t1", body, event.type), body))


def test_verifier_and_runner_refuse_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="keys must be a callable"):
        SignatureVerifier({"a": b"k"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="verifier must be a SignatureVerifier"):
        ProjectionRunner(TaskProjection(), MemoryEventLog(), verifier=len)  # type: ignore[arg-type]


# -- the runner, both backends ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_forged_events_are_skipped_in_every_path(
    signed_log: EventLog, backend: str | None, registry: IdentityRegistry
) -> None:
    log = signed_log
    await log.append_many([(submitted(f"t{i}"), f"tasks.t{i}") for i in range(3)])  # 1-3
    await forge(log, backend, "tasks.evil", submitted("evil"))  # 4
    await forge(
        log, backend, "tasks.t0", TaskClaimed(task_id="t0", agent_id="mallory", claimed_at=1.0)
    )  # 5
    await log.append(submitted("t3"), subject="tasks.t3")  # 6
    verifier = SignatureVerifier(registry.get)
    runner = ProjectionRunner(TaskProjection(), log, verifier=verifier)
    async with runner:  # catch-up read
        tasks = runner.projection
        assert runner.position == {"tasks": 6}
        assert tasks.get("evil") is None
        t0 = tasks.get("t0")
        assert t0 is not None and t0.state is TaskState.PENDING
        assert tasks.get("t3") is not None
        assert runner.rejected_events == verifier.rejected == 2

        await forge(log, backend, "tasks.evil2", submitted("evil2"))  # 7, live
        ack = await log.append(submitted("t4"), subject="tasks.t4")  # 8, live
        await runner.sync()
        assert runner.position == {"tasks": 8}
        assert tasks.get("evil2") is None and tasks.get("t4") is not None
        assert runner.rejected_events == 3
        assert not await runner.apply_ack(ack)  # already applied

        await runner.rebuild()  # the bulk rebuild path
        assert runner.position == {"tasks": 8}
        assert {t.id for t in tasks.pending()} == {"t0", "t1", "t2", "t3", "t4"}
        assert runner.rejected_events == 6

        await runner.rebuild(as_of=5)  # ends on a forged event: its sequence still counts
        assert runner.position == {"tasks": 5}
        assert tasks.get("t3") is None
    assert verifier.accepted >= 6


@pytest.mark.asyncio
async def test_acks_and_gaps_are_checked(
    signed_log: EventLog, backend: str | None, registry: IdentityRegistry
) -> None:
    log = signed_log
    await log.append(submitted("t0"), subject="tasks.t0")  # 1
    runner = ProjectionRunner(TaskProjection(), log, verifier=SignatureVerifier(registry.get))
    await runner.rebuild()  # not following: acks and gap reads do the work
    await forge(log, backend, "tasks.evil", submitted("evil"))  # 2
    [forged] = [r async for r in log.read(stream="tasks", start_seq=2)]
    assert not await runner.apply_ack(forged)
    assert runner.position == {"tasks": 2} and runner.rejected_events == 1

    await forge(log, backend, "tasks.evil3", submitted("evil3"))  # 3, read as a gap
    ack = await log.append(submitted("t4"), subject="tasks.t4")  # 4
    assert await runner.apply_ack(ack)
    assert runner.position == {"tasks": 4} and runner.rejected_events == 2
    assert runner.projection.get("evil3") is None
    assert runner.projection.get("t4") is not None


@pytest.mark.asyncio
async def test_unsigned_events_pass_unless_required(
    event_log: EventLog, registry: IdentityRegistry
) -> None:
    await event_log.append_many([(submitted(f"t{i}"), f"tasks.t{i}") for i in range(3)])
    lenient = SignatureVerifier(registry.get)
    async with ProjectionRunner(TaskProjection(), event_log, verifier=lenient) as runner:
        assert len(runner.projection.pending()) == 3
        assert lenient.unsigned == 3 and runner.rejected_events == 0
    strict = SignatureVerifier(registry.get, require=True)
    async with ProjectionRunner(TaskProjection(), event_log, verifier=strict) as runner:
        assert runner.projection.pending() == []
        assert runner.position == {"tasks": 3}
        assert strict.rejected == 3 == runner.rejected_events
        ack = await event_log.append(submitted("t9"), subject="tasks.t9")
        assert not await runner.apply_ack(ack)
        assert runner.position == {"tasks": 4}


@pytest.mark.asyncio
async def test_signed_and_verified_with_an_unknown_signer(
    log_factory: Callable[..., Awaitable[EventLog]], namespace: str, registry: IdentityRegistry
) -> None:
    """A log signing with a key the registry does not know: everything is rejected."""
    stranger = EventSigner(FORGER_KEY, key_id="stranger")
    log = await log_factory(namespace, stranger)
    try:
        await log.append(submitted("t0"), subject="tasks.t0")
        verifier = SignatureVerifier(registry.get)
        runner = ProjectionRunner(TaskProjection(), log, verifier=verifier)
        await runner.rebuild()
        assert runner.position == {"tasks": 1} and runner.projection.get("t0") is None
        registry.register("stranger", stranger.public_key)
        await runner.rebuild()
        assert runner.projection.get("t0") is not None
    finally:
        await log.close()


@pytest.mark.asyncio
async def test_task_manager_skips_forged_task_events(
    backend: str | None, namespace: str, signed_log: EventLog, registry: IdentityRegistry
) -> None:
    from converge.coordination import TaskManager

    await forge(signed_log, backend, "tasks.fake", submitted("fake"))
    verifier = SignatureVerifier(registry.get)
    async with TaskManager(signed_log, verifier=verifier) as tm:
        real = await tm.submit(Task("real"))
        assert tm.get_task("fake") is None
        task = tm.get_task(real)
        assert task is not None and task.state is TaskState.PENDING
        assert verifier.rejected == 1
