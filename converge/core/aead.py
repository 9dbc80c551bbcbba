"""Authenticated symmetric encryption (ChaCha20-Poly1305), which message payloads use.

In core because ``Message.encrypt_payload`` needs it and core imports nothing above
itself; ``converge.extensions.crypto.symmetric`` re-exports it.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from converge.errors import DecodeError, VerificationError

__all__ = ["KEY_SIZE", "NONCE_SIZE", "TAG_SIZE", "decrypt", "encrypt"]

KEY_SIZE = 32
"""Key length in bytes."""

NONCE_SIZE = 12
"""Length of the random nonce prefixed to every ciphertext."""

TAG_SIZE = 16
"""Length of the Poly1305 authentication tag at the end of every ciphertext."""


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise DecodeError(f"key must be {KEY_SIZE} bytes, got {type(key).__name__}")
    raw = bytes(key)
    if len(raw) != KEY_SIZE:
        raise DecodeError(f"key must be {KEY_SIZE} bytes, got {len(raw)} bytes")
    return raw


def encrypt(plaintext: bytes, key: bytes, associated_data: bytes | None = None) -> bytes:
    """Encrypt and authenticate ``plaintext``; return ``nonce || ciphertext || tag``.

    ``associated_data`` is authenticated but not encrypted; pass the same to
    :func:`decrypt`. Raises ``DecodeError`` (a ``ValueError``) when the key is not 32 bytes.
    """
    aead = ChaCha20Poly1305(_check_key(key))
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, bytes(plaintext), associated_data)


def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes | None = None) -> bytes:
    """Return the plaintext of a :func:`encrypt` output.

    Raises ``DecodeError`` when the key is not 32 bytes or the ciphertext is too short,
    and ``VerificationError`` when the key is wrong or the data was tampered with.
    """
    aead = ChaCha20Poly1305(_check_key(key))
    if not isinstance(ciphertext, bytes | bytearray | memoryview):
        raise DecodeError(f"ciphertext must be bytes, got {type(ciphertext).__name__}")
    data = bytes(ciphertext)
    if len(data) < NONCE_SIZE + TAG_SIZE:
        raise DecodeError(
            f"Ciphertext too short: {len(data)} bytes, need at least {NONCE_SIZE + TAG_SIZE}"
        )
    try:
        return aead.decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], associated_data)
    except InvalidTag as exc:
        raise VerificationError(
            "decryption failed: wrong key, wrong associated data, or tampered ciphertext"
        ) from exc
