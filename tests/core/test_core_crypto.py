"""converge.extensions.crypto: AEAD, HKDF and secure randomness."""

from __future__ import annotations

import pytest

from converge.errors import ConfigError, DecodeError, VerificationError
from converge.extensions.crypto import decrypt, derive_key, encrypt, secure_random_bytes
from converge.extensions.crypto.symmetric import NONCE_SIZE, TAG_SIZE


def test_encrypt_decrypt_round_trip_with_fresh_nonces() -> None:
    key = secure_random_bytes(32)
    first, second = encrypt(b"secret", key), encrypt(b"secret", key)
    assert first != second
    assert len(first) == len(b"secret") + NONCE_SIZE + TAG_SIZE
    assert decrypt(first, key) == decrypt(second, key) == b"secret"


def test_associated_data_must_match() -> None:
    key = secure_random_bytes(32)
    blob = encrypt(b"data", key, associated_data=b"ctx")
    assert decrypt(blob, key, associated_data=b"ctx") == b"data"
    with pytest.raises(VerificationError):
        decrypt(blob, key, associated_data=b"other")
    with pytest.raises(VerificationError):
        decrypt(blob, key)


def test_wrong_key_and_tampering_are_verification_errors() -> None:
    key = secure_random_bytes(32)
    blob = encrypt(b"x" * 40, key)
    with pytest.raises(VerificationError, match="wrong key"):
        decrypt(blob, secure_random_bytes(32))
    for index in (0, NONCE_SIZE, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x80
        with pytest.raises(VerificationError, match="tampered"):
            decrypt(bytes(tampered), key)


def test_bad_key_length_and_short_ciphertext_are_decode_errors() -> None:
    key = secure_random_bytes(32)
    with pytest.raises(DecodeError, match="32 bytes, got 5 bytes"):
        encrypt(b"x", b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt(encrypt(b"x", key), b"short")
    with pytest.raises(DecodeError, match="Ciphertext too short"):
        decrypt(b"x" * 10, key)


def test_derive_key_is_deterministic_and_input_sensitive() -> None:
    salt = b"s" * 16
    assert derive_key("pw", salt) == derive_key(b"pw", salt)
    assert len(derive_key("pw", salt)) == 32
    assert derive_key("pw1", salt) != derive_key("pw2", salt)
    assert derive_key("pw", b"a" * 16) != derive_key("pw", b"b" * 16)
    assert derive_key("pw", salt, info=b"x") != derive_key("pw", salt, info=b"y")
    assert len(derive_key("pw", salt, length=64)) == 64


def test_derive_key_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="length must be an int"):
        derive_key("pw", b"salt", length=0)
    with pytest.raises(ConfigError, match="salt must be bytes"):
        derive_key("pw", "salt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="secret must be str or bytes"):
        derive_key(3, b"salt")  # type: ignore[arg-type]


def test_secure_random_bytes() -> None:
    assert len(secure_random_bytes(32)) == 32
    assert secure_random_bytes(16) != secure_random_bytes(16)
    assert secure_random_bytes(0) == b""
    with pytest.raises(ConfigError, match="non-negative int"):
        secure_random_bytes(-1)
