"""Signed appends on every EventLog backend: headers, verification, determinism."""

from __future__ import annotations

import asyncio
import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from converge.core.identity import Identity
from converge.errors import ConfigError
from events import (
    EventLog,
    EventSigner,
    JetStreamEventLog,
    MemoryEventLog,
    RecordedEvent,
    TaskClaimed,
    TaskSubmitted,
    encode_event,
    signing,
    subject,
    verify_event_signature,
)
from events.signing import HDR_SIGNATURE, HDR_SIGNER, key_fingerprint, signed_payload

KEY = bytes(range(32))
T = "task.submitted"


def submitted(task_id: str, **payload: object) -> TaskSubmitted:
    task = {"id": task_id, "kind": "k", "payload": {"n": 1.5, "nested": {"b": [1, 2]}, **payload}}
    return TaskSubmitted(task=task, actor="agent-a")


def assert_verifies(recorded: RecordedEvent, public_key: bytes) -> None:
    headers = recorded.headers
    assert headers is not None
    assert headers[HDR_SIGNER] == "agent-a"
    assert recorded.body is not None
    assert verify_event_signature(
        recorded.subject, recorded.body, headers[HDR_SIGNATURE], public_key, recorded.event.type
    )


# -- the signer ----------------------------------------------------------------------------


def test_sign_and_verify_round_trip(signer: EventSigner) -> None:
    sig = signer.sign("tasks.t1", b'{"a":1}', T)
    assert "=" not in sig and "+" not in sig and "/" not in sig
    assert len(base64.urlsafe_b64decode(sig + "==")) == 64
    assert verify_event_signature("tasks.t1", b'{"a":1}', sig, signer.public_key, T)
    assert verify_event_signature("tasks.t1", b'{"a":1}', sig + "==", signer.public_key, T)


def test_signature_covers_subject_type_body_and_key(signer: EventSigner) -> None:
    sig = signer.sign("tasks.t1", b"{}", T)
    other = EventSigner(bytes(32), key_id="agent-b")
    assert not verify_event_signature("tasks.t2", b"{}", sig, signer.public_key, T)
    assert not verify_event_signature("tasks.t1", b"{ }", sig, signer.public_key, T)
    assert not verify_event_signature("tasks.t1", b"{}", sig, other.public_key, T)
    assert not verify_event_signature("tasks.t1", b"{}", sig, signer.public_key, "task.claimed")
    assert signed_payload("tasks.t1", b"{}", T) == b"tasks.t1\ntask.submitted\n{}"


def test_own_signatures_skip_the_curve_and_any_other_is_verified(
    signer: EventSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[bytes] = []
    verify = signing._verify

    def counting(signature: bytes, payload: bytes, public_key: bytes) -> bool:
        checked.append(public_key)
        return verify(signature, payload, public_key)

    monkeypatch.setattr(signing, "_verify", counting)
    sig = signer.sign("tasks.t1", b'{"a":1}', T)
    assert verify_event_signature("tasks.t1", b'{"a":1}', sig, signer.public_key, T)
    assert checked == []  # made here over these very bytes: valid by construction
    # the same signature over other bytes, or with another key, is checked and refused
    assert not verify_event_signature("tasks.t1", b'{"a":2}', sig, signer.public_key, T)
    other = EventSigner(bytes(32), key_id="agent-b")
    assert not verify_event_signature("tasks.t1", b'{"a":1}', sig, other.public_key, T)
    # a signature made elsewhere (not through a signer of this process) is verified in full
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    foreign = base64.urlsafe_b64encode(key.sign(signed_payload("tasks.t1", b"{}", T)))
    assert verify_event_signature("tasks.t1", b"{}", foreign.decode(), public, T)
    assert public in checked


def test_the_memory_of_own_signatures_is_bounded() -> None:
    memory = signing._SignedHere(limit=2)
    for n in range(3):
        memory.remember(f"sig{n}", b"k" * 32, b"payload %d" % n)
    assert not memory.vouches("sig0", b"k" * 32, b"payload 0")  # the oldest went
    assert memory.vouches("sig2", b"k" * 32, b"payload 2")
    assert not memory.vouches("sig2", b"k" * 32, b"payload 1")
    assert not memory.vouches("sig2", b"j" * 32, b"payload 2")


@pytest.mark.parametrize("bad", ["", "!!!", "abc", "A" * 200, "AAAA" * 10])
def test_malformed_signature_is_false_not_an_error(signer: EventSigner, bad: str) -> None:
    assert not verify_event_signature("tasks.t1", b"{}", bad, signer.public_key, T)


def test_malformed_public_key_is_false(signer: EventSigner) -> None:
    sig = signer.sign("tasks.t1", b"{}", T)
    assert not verify_event_signature("tasks.t1", b"{}", sig, b"short", T)
    assert not verify_event_signature("tasks.t1", b"{}", sig, b"\x00" * 32, T)


def test_signer_accepts_a_key_object_and_matches_an_identity() -> None:
    identity = Identity.generate()
    from_bytes = EventSigner(identity.private_key_bytes(), key_id=identity.fingerprint)
    from_object = EventSigner(
        Ed25519PrivateKey.from_private_bytes(identity.private_key_bytes()),
        key_id=identity.fingerprint,
    )
    assert from_bytes.public_key == from_object.public_key == identity.public_key
    sig = from_object.sign("tasks.t1", b"{}", T)
    assert verify_event_signature("tasks.t1", b"{}", sig, identity.public_key, T)
    payload = signed_payload("tasks.t1", b"{}", T)
    assert identity.verify(payload, base64.urlsafe_b64decode(sig + "=="))
    assert identity.fingerprint in repr(from_bytes)
    assert EventSigner.from_identity(identity).key_id == identity.fingerprint
    assert EventSigner(identity.private_key_bytes()).key_id == identity.fingerprint
    assert key_fingerprint(identity.public_key) == identity.fingerprint


@pytest.mark.parametrize("key", [b"short", "a" * 32, None, 32])
def test_signer_refuses_bad_keys(key: object) -> None:
    with pytest.raises(ConfigError, match="private_key"):
        EventSigner(key, key_id="a")  # type: ignore[arg-type]


@pytest.mark.parametrize("key_id", ["", "a\nb", 7])
def test_signer_refuses_bad_key_ids(key_id: object) -> None:
    with pytest.raises(ConfigError, match="key_id"):
        EventSigner(KEY, key_id=key_id)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_logs_refuse_a_signer_of_the_wrong_type() -> None:
    with pytest.raises(ConfigError, match="EventSigner"):
        MemoryEventLog("ns", signer="key")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="EventSigner"):
        JetStreamEventLog(object(), namespace="ns", signer=KEY)  # type: ignore[arg-type]


# -- signed logs, both backends --------------------------------------------------------------


@pytest.mark.asyncio
async def test_signed_append_carries_headers_that_verify(
    signed_log: EventLog, signer: EventSigner
) -> None:
    recorded = await signed_log.append(submitted("t1"), subject="tasks.t1", expected_version=0)
    assert_verifies(recorded, signer.public_key)
    [read] = [r async for r in signed_log.read(stream="tasks")]
    assert read == recorded
    assert_verifies(read, signer.public_key)
    assert read.body == recorded.body


@pytest.mark.asyncio
async def test_signed_append_many_and_subscription_verify(
    signed_log: EventLog, signer: EventSigner
) -> None:
    items = [(submitted(f"t{i}"), f"tasks.t{i}") for i in range(5)]
    items.append((TaskClaimed(task_id="t0", agent_id="agent-a", claimed_at=2.0), "tasks.t0", 1))
    results = await signed_log.append_many(items)
    for recorded in results:
        assert_verifies(recorded, signer.public_key)
    seen: list[RecordedEvent] = []
    done = asyncio.Event()

    async def handler(recorded: RecordedEvent) -> None:
        seen.append(recorded)
        if len(seen) == len(items):
            done.set()

    sub = await signed_log.subscribe(handler, stream="tasks")
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await sub.stop()
    assert seen == results
    for recorded in seen:
        assert_verifies(recorded, signer.public_key)


@pytest.mark.asyncio
async def test_retried_signed_append_returns_the_original(signed_log: EventLog) -> None:
    event = submitted("t1")
    first = await signed_log.append(event, subject="tasks.t1", expected_version=0)
    again = await signed_log.append(event, subject="tasks.t1", expected_version=0)
    assert again == first
    assert again.headers is not None and first.headers is not None
    assert again.headers[HDR_SIGNATURE] == first.headers[HDR_SIGNATURE]


@pytest.mark.asyncio
async def test_unsigned_log_adds_no_signature_headers(event_log: EventLog) -> None:
    recorded = await event_log.append(submitted("t1"), subject="tasks.t1")
    [read] = [r async for r in event_log.read(stream="tasks")]
    for record in (recorded, read):
        assert record.headers is not None
        assert HDR_SIGNATURE not in record.headers and HDR_SIGNER not in record.headers
        assert record.body is not None


@pytest.mark.asyncio
async def test_encode_event_of_a_read_event_gives_the_stored_body(event_log: EventLog) -> None:
    """Re-encoding is deterministic: a verifier without the raw body can rebuild it."""
    events = [
        submitted("t1", s="é ✓", f=0.1, big=2**40, neg=-3, empty={}, none=None),
        TaskClaimed(task_id="t1", agent_id="a", claimed_at=1234567890.123456),
    ]
    for event in events:
        await event_log.append(event, subject=subject("tasks", "t1"))
    async for recorded in event_log.read(stream="tasks"):
        assert recorded.body is not None
        assert encode_event(recorded.event)[0] == recorded.body


@pytest.mark.asyncio
async def test_signature_survives_a_copy_to_another_namespace(
    signed_log: EventLog, signer: EventSigner
) -> None:
    recorded = await signed_log.append(submitted("t1"), subject="tasks.t1")
    assert recorded.body is not None and recorded.headers is not None
    copy = MemoryEventLog("elsewhere")
    copy.append_raw(recorded.subject, recorded.body, recorded.headers)
    [copied] = [r async for r in copy.read(stream="tasks")]
    assert copied.event == recorded.event
    assert_verifies(copied, signer.public_key)
