"""``Message.verify`` (libsodium) and ``signing_bytes`` agree with the reference code."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.core._codec import canonical
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import DecodeError

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALICE = Identity.generate()
MALLORY = Identity.generate()

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6)
)
_payloads: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_messages = st.builds(
    Message,
    sender=st.text(max_size=8),
    recipient=st.none() | st.text(max_size=8),
    topics=st.lists(st.sampled_from([Topic("a"), Topic("b", {"z": 1, "a": [2]})]), max_size=2),
    payload=_payloads,
    task_id=st.none() | st.text(max_size=4),
)


def _reference_signing_bytes(message: Message) -> bytes:
    """What signing_bytes encoded before it took the pooled Packer."""
    data = {
        "id": message.id,
        "sender": message.sender,
        "recipient": message.recipient,
        "topics": [t.to_dict() for t in message.topics],
        "payload": message.payload,
        "task_id": message.task_id,
        "timestamp": message.timestamp,
    }
    encoded = msgpack.packb({k: canonical(v) for k, v in data.items()}, use_bin_type=True)
    assert isinstance(encoded, bytes)
    return encoded


@PROPERTY
@given(_messages)
def test_signing_bytes_are_the_reference_encoding(message: Message) -> None:
    assert message.signing_bytes() == _reference_signing_bytes(message)


@PROPERTY
@given(_messages)
def test_verify_agrees_with_openssl(message: Message) -> None:
    signed = message.sign(ALICE)
    assert ALICE.verify(_reference_signing_bytes(signed), signed.signature or b"")
    assert signed.verify(ALICE.public_key) and signed.verify(ALICE)
    assert not signed.verify(MALLORY.public_key)
    forged = dataclasses.replace(signed, payload={"forged": True})
    assert not forged.verify(ALICE.public_key)


def test_bad_signatures_are_false_and_bad_keys_a_decode_error() -> None:
    signed = Message(ALICE.fingerprint, payload={"a": 1}).sign(ALICE)
    signature = signed.signature or b""
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    for bad in (signature[:-1], signature + b"\0", flipped, b"\0" * 64):
        assert not dataclasses.replace(signed, signature=bad).verify(ALICE.public_key)
    assert not dataclasses.replace(signed, signature=None).verify(ALICE.public_key)
    assert signed.verify(bytearray(ALICE.public_key))
    assert not signed.verify(b"\0" * 32)  # not a valid point: refused, no exception
    for key in (b"short", ALICE.public_key + b"\0"):
        with pytest.raises(DecodeError, match="32 bytes"):
            signed.verify(key)
