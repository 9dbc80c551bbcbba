"""Identity: generation, persistence, signing and verification."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from converge.core.identity import Identity, MissingPrivateKeyError, fingerprint_of
from converge.errors import DecodeError, VerificationError


def test_generate_has_keys_and_fingerprint_of_public_key() -> None:
    identity = Identity.generate()
    assert len(identity.public_key) == 32
    assert identity.private_key is not None and len(identity.private_key) == 32
    assert identity.fingerprint == hashlib.sha256(identity.public_key).hexdigest()
    assert identity.can_sign


def test_two_generated_identities_differ() -> None:
    assert Identity.generate().fingerprint != Identity.generate().fingerprint


def test_fingerprint_is_deterministic_across_constructions() -> None:
    identity = Identity.generate()
    again = Identity.from_public_key(identity.public_key)
    assert again.fingerprint == identity.fingerprint == fingerprint_of(identity.public_key)


def test_private_key_round_trip_restores_the_same_identity() -> None:
    identity = Identity.generate()
    restored = Identity.from_private_key(identity.private_key_bytes())
    assert restored == identity
    signature = restored.sign(b"data")
    assert identity.verify(b"data", signature)


def test_sign_and_verify() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"hello")
    assert len(signature) == 64
    assert identity.verify(b"hello", signature)


def test_verify_returns_false_for_bad_signatures_without_raising() -> None:
    identity = Identity.generate()
    other = Identity.generate()
    signature = identity.sign(b"hello")
    assert not identity.verify(b"hullo", signature)
    assert not other.verify(b"hello", signature)
    assert not identity.verify(b"hello", signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not identity.verify(b"hello", b"")
    assert not identity.verify(b"hello", b"short")
    assert not identity.verify(b"hello", "not bytes")  # type: ignore[arg-type]


def test_verify_only_identity_cannot_sign() -> None:
    verify_only = Identity.from_public_key(Identity.generate().public_key)
    assert verify_only.private_key is None
    assert not verify_only.can_sign
    with pytest.raises(VerificationError, match="no private key"):
        verify_only.sign(b"x")
    with pytest.raises(MissingPrivateKeyError, match="private key"):
        verify_only.private_key_bytes()


def test_missing_private_key_error_is_also_a_value_error() -> None:
    verify_only = Identity.from_public_key(Identity.generate().public_key)
    with pytest.raises(ValueError, match="private key"):
        verify_only.sign(b"x")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_wrong_length_public_key_names_the_length(length: int) -> None:
    with pytest.raises(DecodeError, match=f"got {length} bytes"):
        Identity.from_public_key(b"\x01" * length)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_wrong_length_private_key_names_the_length(length: int) -> None:
    with pytest.raises(DecodeError, match=f"got {length} bytes"):
        Identity.from_private_key(b"\x01" * length)


def test_non_bytes_key_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="str"):
        Identity.from_public_key("00" * 32)  # type: ignore[arg-type]


def test_mismatched_private_key_is_rejected() -> None:
    a, b = Identity.generate(), Identity.generate()
    with pytest.raises(VerificationError, match="does not match"):
        Identity(public_key=a.public_key, private_key=b.private_key)


def test_wrong_fingerprint_is_rejected() -> None:
    a = Identity.generate()
    with pytest.raises(VerificationError, match="does not match"):
        Identity(public_key=a.public_key, fingerprint="0" * 64)


def test_identity_is_immutable_and_repr_hides_private_key() -> None:
    identity = Identity.generate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.fingerprint = "new"  # type: ignore[misc]
    assert repr(identity).startswith("Identity(")
    assert identity.private_key is not None
    assert identity.private_key.hex() not in repr(identity)
    assert repr(identity.private_key) not in repr(identity)
