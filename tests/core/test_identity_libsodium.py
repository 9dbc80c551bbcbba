"""Identity signs and checks with libsodium: the same signatures OpenSSL makes."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core.identity import Identity

_IDENTITY = Identity.generate()
_OPENSSL = Ed25519PrivateKey.from_private_bytes(_IDENTITY.private_key_bytes())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500), st.integers(0, 63), st.integers(1, 255))
def test_signatures_and_checks_agree_with_openssl(data: bytes, at: int, flip: int) -> None:
    signature = _IDENTITY.sign(data)
    assert signature == _OPENSSL.sign(data)
    assert _IDENTITY.verify(data, signature)
    bad = bytearray(signature)
    bad[at] ^= flip
    assert not _IDENTITY.verify(data, bytes(bad))
    try:
        _OPENSSL.public_key().verify(bytes(bad), data)
        openssl = True
    except InvalidSignature:
        openssl = False
    assert not openssl
    assert not _IDENTITY.verify(data + b"!", signature)


def test_a_verify_only_identity_checks_what_the_full_one_signed() -> None:
    public = Identity.from_public_key(_IDENTITY.public_key)
    assert public.verify(b"hello", _IDENTITY.sign(b"hello"))
    assert not public.verify(b"hello", bytes(64))
