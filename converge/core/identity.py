"""Ed25519 identities: the root of trust of an agent."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from converge.errors import DecodeError, VerificationError

__all__ = ["KEY_SIZE", "SIGNATURE_SIZE", "Identity", "MissingPrivateKeyError", "fingerprint_of"]

KEY_SIZE = 32
"""Length in bytes of raw Ed25519 public and private keys."""

SIGNATURE_SIZE = 64
"""Length in bytes of an Ed25519 signature."""


class MissingPrivateKeyError(VerificationError, ValueError):
    """A verify-only identity (no private key) was asked to sign."""


def _check_key(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise DecodeError(f"{what} must be {KEY_SIZE} bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != KEY_SIZE:
        raise DecodeError(f"{what} must be {KEY_SIZE} bytes (raw Ed25519), got {len(raw)} bytes")
    return raw


def fingerprint_of(public_key: bytes) -> str:
    """Return the agent id for a raw public key: the hex SHA-256 of its 32 bytes.

    Raises ``DecodeError`` when the key is not 32 bytes.
    """
    return hashlib.sha256(_check_key(public_key, "public key")).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Ed25519 key pair (or public key only) with a stable fingerprint.

    ``fingerprint`` is the hex SHA-256 of the raw public key; it is the agent's id and
    is the same in every process. Build with :meth:`generate`, :meth:`from_private_key`
    or :meth:`from_public_key` (verify-only). Raises ``DecodeError`` for a key that is
    not 32 bytes and ``VerificationError`` when the keys or fingerprint do not match.
    """

    public_key: bytes
    private_key: bytes | None = field(default=None, repr=False)
    fingerprint: str = ""
    # libsodium's form of the private key (seed and public key): it signs and checks in
    # about half OpenSSL's time here, with the same (deterministic) signatures.
    _secret: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        public_raw = _check_key(self.public_key, "public key")
        private_raw: bytes | None = None
        secret: bytes | None = None
        if self.private_key is not None:
            private_raw = _check_key(self.private_key, "private key")
            derived_public, secret = crypto_sign_seed_keypair(private_raw)
            if derived_public != public_raw:
                raise VerificationError("private key does not match the public key")
        expected = hashlib.sha256(public_raw).hexdigest()
        if not isinstance(self.fingerprint, str):
            raise DecodeError(f"fingerprint must be a str, got {type(self.fingerprint).__name__}")
        if self.fingerprint and self.fingerprint != expected:
            raise VerificationError(
                f"fingerprint {self.fingerprint!r} does not match the public key "
                f"(expected {expected!r}); omit it to derive it"
            )
        object.__setattr__(self, "public_key", public_raw)
        object.__setattr__(self, "private_key", private_raw)
        object.__setattr__(self, "fingerprint", expected)
        object.__setattr__(self, "_secret", secret)

    @classmethod
    def generate(cls) -> Identity:
        """Create a new random identity with a private key."""
        private = ed25519.Ed25519PrivateKey.generate()
        return cls(
            public_key=private.public_key().public_bytes_raw(),
            private_key=private.private_bytes_raw(),
        )

    @classmethod
    def from_private_key(cls, private_key: bytes) -> Identity:
        """Rebuild a full identity from its 32 raw private key bytes.

        Raises ``DecodeError`` when the key is not 32 bytes.
        """
        raw = _check_key(private_key, "private key")
        private = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        return cls(public_key=private.public_key().public_bytes_raw(), private_key=raw)

    @classmethod
    def from_public_key(cls, public_key: bytes) -> Identity:
        """Build a verify-only identity from 32 raw public key bytes.

        Raises ``DecodeError`` when the key is not 32 bytes.
        """
        return cls(public_key=public_key)

    @property
    def can_sign(self) -> bool:
        """Whether this identity holds a private key."""
        return self._secret is not None

    def private_key_bytes(self) -> bytes:
        """Return the 32 raw private key bytes, for persistence.

        Raises ``MissingPrivateKeyError`` (a ``VerificationError``) on a verify-only identity.
        """
        if self.private_key is None:
            raise MissingPrivateKeyError(
                f"identity {self.fingerprint} has no private key to export (verify-only)"
            )
        return self.private_key

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``data``.

        Raises ``MissingPrivateKeyError`` (a ``VerificationError`` and ``ValueError``) when
        this identity has no private key.
        """
        if self._secret is None:
            raise MissingPrivateKeyError(
                f"identity {self.fingerprint} has no private key and cannot sign; "
                "use Identity.generate() or Identity.from_private_key()"
            )
        return crypto_sign(bytes(data), self._secret)[:SIGNATURE_SIZE]

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this identity's signature of ``data``.

        Never raises for a bad, missing or malformed signature: returns ``False``.
        """
        if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_SIZE:
            return False
        if not isinstance(data, bytes | bytearray | memoryview):
            return False
        try:
            crypto_sign_open(bytes(signature) + bytes(data), self.public_key)
        except (BadSignatureError, ValueError):
            return False
        return True
