"""Message: signing, encoding, encryption and bad input."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import msgpack
import pytest

from converge.core.identity import Identity
from converge.core.message import ENCRYPTED_KEY, MAX_MESSAGE_BYTES, Message
from converge.core.topic import Topic
from converge.errors import DecodeError, VerificationError


@pytest.fixture
def identity() -> Identity:
    return Identity.generate()


def _full_message(identity: Identity) -> Message:
    return Message(
        identity.fingerprint,
        recipient="agent-b",
        topics=[Topic("ns", {"kind": "ping"}, "1"), "plain"],
        payload={"text": "hello", "n": 3, "f": 1.5, "raw": b"\x00\xff", "nested": {"l": [1, None]}},
        task_id="task-1",
    )


def test_defaults() -> None:
    message = Message("agent-a")
    assert message.recipient is None
    assert message.topics == ()
    assert message.payload == {}
    assert message.task_id is None
    assert message.signature is None
    assert isinstance(message.id, str) and len(message.id) == 36
    assert isinstance(message.timestamp, float) and message.timestamp > 1.6e9


def test_topics_are_normalised_to_topic_objects() -> None:
    message = Message("a", topics=["ns", {"namespace": "other", "attributes": {"x": 1}}])
    assert message.topics == (Topic("ns"), Topic("other", {"x": 1}))


def test_message_is_immutable() -> None:
    message = Message("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.sender = "b"  # type: ignore[misc]


def test_to_dict_from_dict_round_trip(identity: Identity) -> None:
    message = _full_message(identity).sign(identity)
    data = message.to_dict()
    assert data["topics"][0] == {"namespace": "ns", "attributes": {"kind": "ping"}, "version": "1"}
    assert isinstance(data["signature"], bytes)
    restored = Message.from_dict(data)
    assert restored == message
    assert restored.verify(identity.public_key)


def test_to_bytes_from_bytes_round_trip(identity: Identity) -> None:
    for message in (_full_message(identity), _full_message(identity).sign(identity)):
        encoded = message.to_bytes()
        restored = Message.from_bytes(encoded)
        assert restored == message
        assert restored.to_bytes() == encoded


def test_sign_sets_sender_and_verifies(identity: Identity) -> None:
    signed = Message("placeholder", payload={"x": 1}).sign(identity)
    assert signed.sender == identity.fingerprint
    assert signed.signature is not None and len(signed.signature) == 64
    assert signed.verify(identity.public_key)
    assert signed.verify(identity)
    assert not signed.verify(Identity.generate().public_key)


def test_missing_signature_does_not_verify(identity: Identity) -> None:
    message = Message(identity.fingerprint)
    assert not message.is_signed
    assert not message.verify(identity.public_key)


def test_forged_signature_does_not_verify(identity: Identity) -> None:
    forger = Identity.generate()
    genuine = Message(identity.fingerprint, payload={"amount": 1})
    forged = dataclasses.replace(genuine, signature=forger.sign(genuine.signing_bytes()))
    assert not forged.verify(identity.public_key)
    garbage = dataclasses.replace(genuine, signature=os.urandom(64))
    assert not garbage.verify(identity.public_key)
    short = dataclasses.replace(genuine, signature=b"abc")
    assert not short.verify(identity.public_key)


@pytest.mark.parametrize(
    "change",
    [
        {"sender": "someone-else"},
        {"recipient": "agent-c"},
        {"topics": (Topic("ns", {"kind": "pong"}, "1"),)},
        {"payload": {"text": "hullo"}},
        {"task_id": "task-2"},
        {"id": "another-id"},
        {"timestamp": 1.0},
    ],
)
def test_signature_covers_every_field(identity: Identity, change: dict[str, Any]) -> None:
    signed = _full_message(identity).sign(identity)
    assert signed.verify(identity.public_key)
    assert not dataclasses.replace(signed, **change).verify(identity.public_key)


def test_signing_bytes_do_not_depend_on_dict_order(identity: Identity) -> None:
    a = Message("s", payload={"b": 2, "a": {"z": 1, "y": 2}}, id="m", timestamp=1.0)
    b = Message("s", payload={"a": {"y": 2, "z": 1}, "b": 2}, id="m", timestamp=1.0)
    assert a.signing_bytes() == b.signing_bytes()
    assert a.sign(identity).signature == b.sign(identity).signature


def test_signature_is_stable_for_a_fixed_key() -> None:
    identity = Identity.from_private_key(bytes.fromhex("1f" * 32))
    message = Message(
        identity.fingerprint,
        payload={"b": 2, "a": {"z": 1, "y": 2}},
        id="msg-fixed-001",
        timestamp=1700000000000,
    ).sign(identity)
    assert message.signature is not None
    assert message.signature.hex() == (
        "c68853863eac5d9371772d11d12d4356bb341d97934858e4667d76b3dc8f7169"
        "5c44cb20a55a757bad792d36885ee41f67391c9e733fd0d498de788126f37e08"
    )


def test_verify_only_identity_cannot_sign_a_message(identity: Identity) -> None:
    verify_only = Identity.from_public_key(identity.public_key)
    with pytest.raises(VerificationError, match="private key"):
        Message("a").sign(verify_only)


def test_verify_with_wrong_length_key_names_the_length(identity: Identity) -> None:
    signed = Message("a").sign(identity)
    with pytest.raises(DecodeError, match="got 5 bytes"):
        signed.verify(b"short")


# -- encryption ------------------------------------------------------------------


def test_encrypt_decrypt_round_trip(identity: Identity) -> None:
    key = os.urandom(32)
    message = _full_message(identity)
    encrypted = message.encrypt_payload(key)
    assert set(encrypted.payload) == {ENCRYPTED_KEY}
    assert encrypted.is_encrypted
    assert b"hello" not in encrypted.to_bytes()
    decrypted = encrypted.decrypt_payload(key)
    assert decrypted.payload == message.payload
    assert decrypted == message


def test_encrypt_then_sign_survives_the_wire(identity: Identity) -> None:
    key = os.urandom(32)
    sent = Message("x", payload={"secret": 42}).encrypt_payload(key).sign(identity)
    received = Message.from_bytes(sent.to_bytes())
    assert received.verify(identity.public_key)
    assert received.decrypt_payload(key).payload == {"secret": 42}


def test_decrypt_with_wrong_key_is_a_verification_error() -> None:
    encrypted = Message("a", payload={"s": 1}).encrypt_payload(os.urandom(32))
    with pytest.raises(VerificationError, match="wrong key"):
        encrypted.decrypt_payload(os.urandom(32))


def test_tampered_ciphertext_is_a_verification_error() -> None:
    key = os.urandom(32)
    encrypted = Message("a", payload={"s": 1}).encrypt_payload(key)
    blob = bytearray(encrypted.payload[ENCRYPTED_KEY])
    blob[-1] ^= 0x01
    tampered = dataclasses.replace(encrypted, payload={ENCRYPTED_KEY: bytes(blob)})
    with pytest.raises(VerificationError, match="tampered"):
        tampered.decrypt_payload(key)


def test_ciphertext_is_bound_to_the_message_id() -> None:
    key = os.urandom(32)
    encrypted = Message("a", payload={"s": 1}).encrypt_payload(key)
    moved = Message("a", payload=encrypted.payload)
    with pytest.raises(VerificationError):
        moved.decrypt_payload(key)


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_wrong_key_length_names_the_length(length: int) -> None:
    with pytest.raises(DecodeError, match=f"32 bytes, got {length} bytes"):
        Message("a").encrypt_payload(b"k" * length)


def test_malformed_encrypted_payload_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="must be bytes"):
        Message("a", payload={ENCRYPTED_KEY: "text"}).decrypt_payload(os.urandom(32))
    with pytest.raises(DecodeError, match="too short"):
        Message("a", payload={ENCRYPTED_KEY: b"x"}).decrypt_payload(os.urandom(32))


def test_decrypt_of_plain_message_returns_it_unchanged() -> None:
    message = Message("a", payload={"plain": 1})
    assert message.decrypt_payload(os.urandom(32)) is message


# -- bad input --------------------------------------------------------------------


def test_truncated_bytes_are_a_decode_error(identity: Identity) -> None:
    encoded = _full_message(identity).sign(identity).to_bytes()
    for cut in (1, len(encoded) // 2, len(encoded) - 1):
        with pytest.raises(DecodeError, match="Invalid message bytes"):
            Message.from_bytes(encoded[:cut])


def test_trailing_bytes_are_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="Invalid message bytes"):
        Message.from_bytes(Message("a").to_bytes() + b"\x00")


def test_empty_and_non_bytes_input_are_decode_errors() -> None:
    with pytest.raises(DecodeError, match="empty"):
        Message.from_bytes(b"")
    with pytest.raises(DecodeError, match="expected bytes"):
        Message.from_bytes("text")  # type: ignore[arg-type]


def test_oversized_bytes_are_a_decode_error_naming_the_limit() -> None:
    big = Message("a", payload={"blob": b"x" * MAX_MESSAGE_BYTES}).to_bytes()
    with pytest.raises(DecodeError, match=f"exceeds the limit of {MAX_MESSAGE_BYTES} bytes"):
        Message.from_bytes(big)
    small = Message("a", payload={"blob": b"x" * 100}).to_bytes()
    with pytest.raises(DecodeError, match="limit of 50 bytes"):
        Message.from_bytes(small, max_size=50)
    assert Message.from_bytes(small, max_size=len(small)).payload["blob"] == b"x" * 100


def test_non_map_msgpack_is_invalid() -> None:
    with pytest.raises(ValueError, match="Invalid"):
        Message.from_bytes(msgpack.packb([1, 2, 3]))


def test_extension_types_are_rejected() -> None:
    data = msgpack.packb({"sender": msgpack.ExtType(5, b"x"), "id": "i", "timestamp": 1.0})
    with pytest.raises(DecodeError, match="ExtType"):
        Message.from_bytes(data)


def _valid_dict() -> dict[str, Any]:
    return Message("a", payload={"x": 1}, topics=["ns"]).to_dict()


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("sender", 3, "Message.sender must be a str"),
        ("recipient", ["b"], "Message.recipient must be a str"),
        ("topics", "ns", "Message.topics must be a list"),
        ("topics", [3], "topic must be a Topic"),
        ("topics", [{"namespace": 1}], "Topic.namespace"),
        ("task_id", 7, "Message.task_id must be a str"),
        ("id", None, "Message.id must be a str"),
        ("id", "", "Message.id must not be empty"),
        ("timestamp", "now", "Message.timestamp must be a number"),
        ("timestamp", True, "Message.timestamp must be a number"),
        ("signature", "abcd", "Message.signature must be bytes"),
    ],
)
def test_wrong_field_types_name_the_field(field: str, value: Any, needle: str) -> None:
    data = _valid_dict()
    data[field] = value
    with pytest.raises(DecodeError, match=needle):
        Message.from_dict(data)
    with pytest.raises(DecodeError, match=needle):
        Message.from_bytes(msgpack.packb(data, use_bin_type=True))


@pytest.mark.parametrize("field", ["sender", "id", "timestamp"])
def test_missing_required_field_is_named(field: str) -> None:
    data = _valid_dict()
    del data[field]
    with pytest.raises(DecodeError, match=f"missing the required field '{field}'"):
        Message.from_dict(data)


def test_unencodable_payload_is_rejected_at_construction() -> None:
    with pytest.raises(DecodeError, match=r"Message.payload\['obj'\] holds a object"):
        Message("a", payload={"obj": object()})
    with pytest.raises(DecodeError, match="64-bit"):
        Message("a", payload={"n": 2**70})
    with pytest.raises(DecodeError, match="non-string key"):
        Message("a", payload={"d": {1: "x"}})


def test_too_deep_payload_is_rejected() -> None:
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(DecodeError, match="nested deeper"):
        Message("a", payload={"deep": deep})
