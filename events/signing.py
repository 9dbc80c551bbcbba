"""Ed25519 signatures of stored events: who wrote an event, checkable by any reader.

A signer adds two headers to every event a log appends:

* ``Converge-Signer``: the key id (the acting agent's id or key fingerprint), which
  a reader looks up in its identity registry;
* ``Converge-Signature``: base64url (no padding) of the Ed25519 signature over
  ``relative_subject.encode() + b"\\n" + body``.

The subject signed is the relative one (``"tasks.<id>"``, namespace-free), so a stream
copied to another namespace still verifies; the body is the stored JSON bytes.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from converge.errors import ConfigError

__all__ = [
    "HDR_SIGNATURE",
    "HDR_SIGNER",
    "EventSigner",
    "signed_payload",
    "verify_event_signature",
]

HDR_SIGNATURE = "Converge-Signature"
HDR_SIGNER = "Converge-Signer"

_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


def signed_payload(subject: str, body: bytes) -> bytes:
    """Return the bytes an event signature covers: ``subject``, a newline, ``body``."""
    return subject.encode() + b"\n" + bytes(body)


class EventSigner:
    """Sign events with one Ed25519 private key, under the key id ``key_id``.

    ``private_key`` is the 32 raw private-key bytes or an ``Ed25519PrivateKey``.
    Raises :class:`ConfigError` for any other key or an empty ``key_id``.
    """

    __slots__ = ("_key", "key_id", "public_key")

    def __init__(self, private_key: bytes | Ed25519PrivateKey, *, key_id: str) -> None:
        if not isinstance(key_id, str) or not key_id or any(c in key_id for c in "\r\n"):
            raise ConfigError(f"key_id must be a non-empty one-line string, got {key_id!r}")
        if isinstance(private_key, Ed25519PrivateKey):
            key = private_key
        elif isinstance(private_key, bytes | bytearray) and len(private_key) == _KEY_BYTES:
            key = Ed25519PrivateKey.from_private_bytes(bytes(private_key))
        else:
            raise ConfigError(
                "private_key must be 32 raw Ed25519 private-key bytes or an "
                f"Ed25519PrivateKey, got {type(private_key).__name__}"
            )
        self._key = key
        self.key_id = key_id
        #: The 32 raw public-key bytes, as an identity registry keeps them.
        self.public_key: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, subject: str, body: bytes) -> str:
        """Return the base64url signature (no padding) of ``subject`` and ``body``."""
        signature = self._key.sign(signed_payload(subject, body))
        return base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")

    def headers(self, subject: str, body: bytes) -> dict[str, str]:
        """Return the signature headers for an event stored on ``subject`` with ``body``."""
        return {HDR_SIGNER: self.key_id, HDR_SIGNATURE: self.sign(subject, body)}

    def add_headers(self, headers: dict[str, str], subject: str, body: bytes) -> None:
        """Add the signature headers to ``headers`` in place."""
        headers[HDR_SIGNER] = self.key_id
        headers[HDR_SIGNATURE] = self.sign(subject, body)

    def __repr__(self) -> str:
        return f"EventSigner(key_id={self.key_id!r})"


def _decode_signature(signature_b64: str) -> bytes | None:
    if not isinstance(signature_b64, str) or len(signature_b64) > 128:
        return None
    text = signature_b64.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _SIGNATURE_BYTES else None


def verify_event_signature(
    subject: str, body: bytes, signature_b64: str, public_key: bytes
) -> bool:
    """Return whether ``signature_b64`` is ``public_key``'s signature of subject and body.

    Never raises: a malformed signature or key gives ``False``.
    """
    signature = _decode_signature(signature_b64)
    if signature is None or not isinstance(public_key, bytes | bytearray):
        return False
    if len(public_key) != _KEY_BYTES:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes(public_key))
        key.verify(signature, signed_payload(subject, body))
    except (InvalidSignature, ValueError):
        return False
    return True
