"""Nobody acts for another: forged and impersonating task events are refused on both backends.

The attacker has publish rights on the broker and a key of its own (registered, even):
its events are stored, but projections refuse them, count them per reason, and the
task's true state stays intact (and writable by its real holder).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import nats
import pytest

from converge.coordination import TaskManager
from converge.core import Identity, Task, TaskState
from converge.errors import ConfigError
from converge.network.identity_registry import IdentityRegistry
from events import (
    Event,
    EventLog,
    EventSigner,
    MemoryEventLog,
    RecordedEvent,
    SignaturePolicySet,
    SignerRing,
    TaskCancelled,
    TaskClaimed,
    TaskClaimReleased,
    TaskFailed,
    TaskReported,
    encode_event,
    subject,
)
from projections import ProjectionRunner, TaskProjection
from projections.policy import (
    POLICY_SUBJECT,
    ensure_signature_policy,
    load_signature_policy,
    verifier_for,
)
from projections.verify import SignatureVerifier

LogFactory = Callable[..., Awaitable[EventLog]]


async def attack(
    log: EventLog, backend: str | None, event: Event, signer: EventSigner | None
) -> None:
    """Store ``event`` as an outsider would: straight on the broker, no concurrency check."""
    task_id = getattr(event, "task_id")  # noqa: B009 (every attack here is a task event)
    subj = subject("tasks", task_id)
    body, headers = encode_event(event)
    if signer is not None:
        signer.add_headers(headers, subj, body, event)
    if backend is None:
        assert isinstance(log, MemoryEventLog)
        log.append_raw(subj, body, headers)
        return
    nc = await nats.connect(backend)
    try:
        await nc.jetstream().publish(f"{log.namespace}.{subj}", body, headers=headers)
    finally:
        await nc.close()


@pytest.fixture
def service() -> EventSigner:
    """The deployment's trusted service identity (submits, cancels, sweeps)."""
    return EventSigner.from_identity(Identity.generate())


@pytest.mark.asyncio
async def test_forged_claim_report_cancel_and_impersonation_are_refused(
    backend: str | None, namespace: str, log_factory: LogFactory, service: EventSigner
) -> None:
    victim = Identity.generate()
    mallory = Identity.generate()
    ring = SignerRing(service)
    ring.add_identity(victim)
    registry = IdentityRegistry()  # mallory's key is even registered: it does not help
    registry.register(victim.fingerprint, victim.public_key)
    registry.register(mallory.fingerprint, mallory.public_key)
    mallory_key = EventSigner.from_identity(mallory)
    log = await log_factory(namespace, ring)
    verifier = SignatureVerifier(registry.get, require=True, trusted={service.key_id})
    try:
        async with TaskManager(log, verifier=verifier) as tm:
            held = await tm.submit(Task("pay", {"amount": 5}))
            free = await tm.submit(Task("other"))
            assert await tm.claim(victim.fingerprint, held)
            loot = {"paid_to": "mallory"}
            attacks: list[tuple[Event, EventSigner | None, str]] = [
                # a forged report (unsigned, as raw nats-py would publish it)
                (TaskReported(task_id=held, agent_id=victim.fingerprint, result=loot), None,
                 "unsigned"),
                # an impersonating report: mallory's registered key, the victim's id, no actor
                (TaskReported(task_id=held, agent_id=victim.fingerprint, result=loot),
                 mallory_key, "impersonation"),
                # a forged claim of the free task in the victim's name
                (TaskClaimed(task_id=free, agent_id=victim.fingerprint, claimed_at=time.time()),
                 mallory_key, "impersonation"),
                (TaskClaimed(task_id=free, agent_id=mallory.fingerprint, claimed_at=time.time()),
                 None, "unsigned"),
                # a forged cancel, as an operator's service would write it, and one with an actor
                (TaskCancelled(task_id=held), mallory_key, "untrusted-signer"),
                (TaskCancelled(task_id=held, actor=mallory.fingerprint), mallory_key,
                 "untrusted-signer"),
                # an operator-style failure and a sweeper-style release of the victim's claim
                (TaskFailed(task_id=held, reason="x", actor=mallory.fingerprint), mallory_key,
                 "untrusted-signer"),
                (TaskClaimReleased(task_id=held, agent_id=victim.fingerprint), mallory_key,
                 "impersonation"),
                # the victim's id in agent_id, mallory's own in actor
                (TaskReported(task_id=held, agent_id=victim.fingerprint, actor=mallory.fingerprint,
                              result=loot), mallory_key, "impersonation"),
            ]  # fmt: skip
            for event, key, _ in attacks:
                await attack(log, backend, event, key)
            await tm.sync()

            task = tm.get_task(held)
            assert task is not None and task.state is TaskState.ASSIGNED
            assert task.assigned_to == victim.fingerprint and task.result is None
            other = tm.get_task(free)
            assert other is not None and other.state is TaskState.PENDING
            expected: dict[str, int] = {}
            for _, _, reason in attacks:
                expected[reason] = expected.get(reason, 0) + 1
            assert dict(verifier.rejections) == expected
            assert tm.runner.rejected_events == len(attacks) == verifier.rejected
            seen = {(r.subject, r.reason) for r in verifier.recent}
            assert (subject("tasks", held), "impersonation") in seen
            assert all(r.sequence > 0 and r.stream == "tasks" for r in verifier.recent)

            # the rejected events moved the entity's version: the holder still reports
            await tm.report(victim.fingerprint, held, {"paid_to": "victim"})
            done = tm.get_task(held)
            assert done is not None and done.state is TaskState.COMPLETED
            assert done.result == {"paid_to": "victim"}

        # another process rebuilding from scratch sees the same true state
        fresh = SignatureVerifier(require=True, trusted={service.key_id})  # no registry
        runner = ProjectionRunner(TaskProjection(), log, verifier=fresh)
        projection = await runner.rebuild()
        rebuilt = projection.get(held)
        assert rebuilt is not None and rebuilt.result == {"paid_to": "victim"}
        free_task = projection.get(free)
        assert free_task is not None and free_task.state is TaskState.PENDING
        assert fresh.rejected == len(attacks) and dict(fresh.rejections) == expected
    finally:
        await log.close()


@pytest.mark.asyncio
async def test_an_agent_acts_for_itself_without_any_registry(
    backend: str | None, namespace: str, log_factory: LogFactory, service: EventSigner
) -> None:
    """Self-certifying ids: a stranger's key is good for the stranger's own actions."""
    worker = Identity.generate()
    stranger = EventSigner.from_identity(Identity.generate())
    log = await log_factory(namespace, SignerRing(service, [EventSigner.from_identity(worker)]))
    verifier = SignatureVerifier(require=True, trusted={service.key_id})
    try:
        async with TaskManager(log, verifier=verifier) as tm:
            mine = await tm.submit(Task("a"))
            theirs = await tm.submit(Task("b"))
            assert await tm.claim(worker.fingerprint, mine)
            claim = TaskClaimed(task_id=theirs, agent_id=stranger.key_id, claimed_at=time.time())
            await attack(log, backend, claim, stranger)
            await tm.sync()
            task = tm.get_task(theirs)
            assert task is not None and task.assigned_to == stranger.key_id
            assert verifier.rejected == 0 and verifier.accepted == 4
    finally:
        await log.close()


def test_a_key_that_is_not_the_signers_is_refused(service: EventSigner) -> None:
    """The header key must hash to the signer id: no claiming a fingerprint with another key."""
    victim = Identity.generate()
    mallory = Identity.generate()
    posing = EventSigner(mallory.private_key_bytes(), key_id=victim.fingerprint)  # victim's id
    event = TaskReported(task_id="t1", agent_id=victim.fingerprint, result=1)
    body, headers = encode_event(event)
    posing.add_headers(headers, "tasks.t1", body, event)
    recorded = RecordedEvent(event, "tasks", "tasks.t1", 3, 0.0, headers, body)
    verifier = SignatureVerifier()
    assert not verifier.check(recorded)
    assert dict(verifier.rejections) == {"key-mismatch": 1}
    assert verifier.summary()["rejected"] == 1
    [recent] = verifier.recent
    assert recent.to_dict()["sequence"] == 3 and recent.subject == "tasks.t1"
    partial = dict(headers)
    del partial["Converge-Signature"]
    assert not verifier.check(RecordedEvent(event, "tasks", "tasks.t1", 4, 0.0, partial, body))
    assert verifier.rejections["partial-signature"] == 1


@pytest.mark.asyncio
async def test_the_namespace_policy_is_recorded_and_only_trusted_keys_change_it(
    backend: str | None, namespace: str, log_factory: LogFactory, service: EventSigner
) -> None:
    mallory = EventSigner.from_identity(Identity.generate())
    log = await log_factory(namespace, SignerRing(service))
    # another process on the broker; the in-process log has one instance, so share it
    other = log if backend is None else await log_factory(namespace, mallory)

    async def mallory_writes(event: SignaturePolicySet, key: EventSigner | None) -> None:
        body, headers = encode_event(event)
        if key is not None:
            key.add_headers(headers, POLICY_SUBJECT, body, event)
        if isinstance(log, MemoryEventLog):
            log.append_raw(POLICY_SUBJECT, body, headers)
        elif key is not None:
            await other.append(event, subject=POLICY_SUBJECT)

    try:
        assert await load_signature_policy(log) is None
        policy = await ensure_signature_policy(log, trusted_signers=[service.key_id])
        assert policy.require_signatures and policy.trusted_signers == {service.key_id}
        assert policy.set_by == service.key_id
        # a second process (another key) asking for a laxer rule gets the recorded one
        if backend is not None:
            assert await ensure_signature_policy(other, require_signatures=False) == policy
        # an untrusted key cannot turn verification off, nor can an unsigned event
        await mallory_writes(SignaturePolicySet(require_signatures=False), mallory)
        await mallory_writes(SignaturePolicySet(require_signatures=False), None)
        assert await load_signature_policy(other) == policy
        verifier = verifier_for(policy, trusted=["pinned"])
        assert verifier.require and verifier.trusted == {service.key_id, "pinned"}
        # the trusted key may change it
        await log.append(
            SignaturePolicySet(require_signatures=False, trusted_signers=[service.key_id]),
            subject=POLICY_SUBJECT,
        )
        changed = await load_signature_policy(other)
        assert changed is not None and not changed.require_signatures
        # a process pinning other keys ignores a first policy they did not sign
        assert await load_signature_policy(other, pinned=[service.key_id]) == changed
        assert await load_signature_policy(other, pinned=["nobody"]) is None
    finally:
        if other is not log:
            await other.close()
        await log.close()


@pytest.mark.asyncio
async def test_an_unsigned_log_cannot_record_a_policy(namespace: str) -> None:
    async with MemoryEventLog(namespace) as log:
        with pytest.raises(ConfigError, match="must sign"):
            await ensure_signature_policy(log)
