"""Key derivation (HKDF-SHA256)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from converge.errors import ConfigError

__all__ = ["derive_key"]

_MAX_LENGTH = 255 * 32


def derive_key(
    secret: str | bytes, salt: bytes, length: int = 32, *, info: bytes = b"converge"
) -> bytes:
    """Derive ``length`` bytes of key material from ``secret`` and ``salt`` with HKDF-SHA256.

    Deterministic for equal inputs. HKDF does not slow down guessing: ``secret`` must be
    high-entropy (a shared secret or random token), not a human password. A str secret is
    UTF-8 encoded. Raises ``ConfigError`` (a ``ValueError``) for a bad length or types.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes | bytearray):
        raise ConfigError(f"secret must be str or bytes, got {type(secret).__name__}")
    if not isinstance(salt, bytes | bytearray):
        raise ConfigError(f"salt must be bytes, got {type(salt).__name__}")
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= _MAX_LENGTH:
        raise ConfigError(f"length must be an int from 1 to {_MAX_LENGTH}, got {length!r}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=bytes(salt), info=bytes(info))
    return hkdf.derive(bytes(secret))
