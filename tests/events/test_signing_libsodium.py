"""Event signatures are made with libsodium: the same bytes OpenSSL's Ed25519 gives."""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from events import signing
from events.signing import EventSigner, signed_payload, verify_event_signature

_KEY = Ed25519PrivateKey.generate()
_SIGNER = EventSigner(_KEY)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.binary(max_size=300), st.text(max_size=20))
def test_a_signature_is_the_one_cryptography_makes(
    subject: str, body: bytes, event_type: str
) -> None:
    try:
        payload = signed_payload(subject, body, event_type)
    except UnicodeEncodeError:
        return  # a lone surrogate: no subject or type holds one
    signature = _SIGNER.sign(subject, body, event_type)
    expected = base64.urlsafe_b64encode(_KEY.sign(payload)).rstrip(b"=").decode("ascii")
    assert signature == expected
    assert verify_event_signature(subject, body, signature, _SIGNER.public_key, event_type)


def test_signers_from_raw_bytes_and_from_a_key_object_agree() -> None:
    raw = EventSigner(bytes(range(32)))
    again = EventSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    assert raw.public_key == again.public_key and raw.key_id == again.key_id
    assert raw.sign("tasks.a", b"{}", "task.submitted") == again.sign(
        "tasks.a", b"{}", "task.submitted"
    )
    assert raw.sign("tasks.a", b"{}", "task.submitted") != raw.sign(
        "tasks.b", b"{}", "task.submitted"
    )


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=63), st.integers(1, 255))
def test_libsodium_verifies_as_openssl_does(body: bytes, at: int, flip: int) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    raw = public.public_bytes_raw()
    payload = signed_payload("tasks.t", body, "task.submitted")
    signature = key.sign(payload)  # made by OpenSSL: not one this process's signers made
    assert signing._verify(signature, payload, raw)
    bad = bytearray(signature)
    bad[at] ^= flip
    try:
        public.verify(bytes(bad), payload)
        openssl = True
    except InvalidSignature:
        openssl = False
    assert not openssl  # a flipped bit never verifies with either
    assert not signing._verify(bytes(bad), payload, raw)
    assert not signing._verify(signature, payload + b"x", raw)


def test_libsodium_refuses_a_small_order_key() -> None:
    # The identity point (y = 1) as a key, with the all-identity signature OpenSSL's
    # permissive check may take for any message: libsodium refuses both.
    identity = b"\x01" + bytes(31)
    assert not signing._verify(identity + bytes(32), b"anything", identity)
    assert not verify_event_signature("tasks.t", b"{}", "A" * 86, identity, "task.submitted")
