"""Cryptographically secure random bytes."""

from __future__ import annotations

import secrets

from converge.errors import ConfigError

__all__ = ["secure_random_bytes"]


def secure_random_bytes(n: int) -> bytes:
    """Return ``n`` random bytes from the OS CSPRNG.

    Raises ``ConfigError`` (a ``ValueError``) when ``n`` is not a non-negative int.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be a non-negative int, got {n!r}")
    return secrets.token_bytes(n)
