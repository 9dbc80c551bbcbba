"""Symmetric encryption, key derivation and secure randomness."""

from __future__ import annotations

from converge.extensions.crypto.kdf import derive_key
from converge.extensions.crypto.random import secure_random_bytes
from converge.extensions.crypto.symmetric import decrypt, encrypt

__all__ = ["decrypt", "derive_key", "encrypt", "secure_random_bytes"]
