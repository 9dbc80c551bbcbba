"""Event signatures are made with libsodium: the same bytes OpenSSL's Ed25519 gives."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

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
