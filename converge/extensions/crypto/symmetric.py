"""Authenticated symmetric encryption (ChaCha20-Poly1305); the primitive lives in core.

``converge.core.message`` encrypts payloads with it and core imports nothing above
itself, so the implementation is :mod:`converge.core.aead`; this module keeps the
public import path.
"""

from __future__ import annotations

from converge.core.aead import KEY_SIZE, NONCE_SIZE, TAG_SIZE, decrypt, encrypt

__all__ = ["KEY_SIZE", "NONCE_SIZE", "TAG_SIZE", "decrypt", "encrypt"]
