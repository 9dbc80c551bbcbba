"""Ed25519 signatures of stored events: who wrote an event, checkable by any reader.

A signer adds three headers to every event a log appends:

* ``Converge-Signer``: the key id, by default the fingerprint of the key (the hex
  SHA-256 of the raw public key, which is also the agent's id);
* ``Converge-Signer-Key``: base64url (no padding) of the raw 32-byte public key, so a
  reader needs no registry: the key is good for the id when its fingerprint is the id;
* ``Converge-Signature``: base64url (no padding) of the Ed25519 signature over
  ``relative_subject + "\\n" + event_type + "\\n" + body``.

The subject signed is the relative one (``"tasks.<id>"``, namespace-free), so a stream
copied to another namespace still verifies; the body is the stored JSON bytes; the
event type (a header) is covered so a signed body cannot be relabelled as another type.

Who acts: :func:`acting_agents` reads the fields of
:data:`events.types.ACTING_AGENT_FIELDS`. A :class:`SignerRing` holds the keys of the
agents of one process and signs each event with the key of the agent it acts for, or
with its default (service) key, so concurrent agents in one process each sign as
themselves through one shared log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from converge.errors import ConfigError
from events.base import Event
from events.codec import HDR_EVENT_TYPE
from events.types import ACTING_AGENT_FIELDS

__all__ = [
    "HDR_SIGNATURE",
    "HDR_SIGNER",
    "HDR_SIGNER_KEY",
    "EventSigner",
    "SignerRing",
    "acting_agents",
    "check_signer",
    "decode_public_key",
    "is_fingerprint",
    "key_fingerprint",
    "signed_payload",
    "verify_event_signature",
]

HDR_SIGNATURE = "Converge-Signature"
HDR_SIGNER = "Converge-Signer"
HDR_SIGNER_KEY = "Converge-Signer-Key"

_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_FINGERPRINT = re.compile(r"[0-9a-f]{64}\Z")


def signed_payload(subject: str, body: bytes, event_type: str) -> bytes:
    """Return the bytes an event signature covers: subject, type and body, newline-separated."""
    return b"".join((subject.encode(), b"\n", event_type.encode(), b"\n", body))


# Verifying folds every event's signer key header: a process meets few keys, again and
# again, so their decoded bytes and fingerprints are kept (bounded; cleared when full).
_CACHE_LIMIT = 4096
_fingerprints: dict[bytes, str] = {}
_public_keys: dict[str, bytes | None] = {}


def key_fingerprint(public_key: bytes) -> str:
    """Return the fingerprint (agent id) of a raw public key: its hex SHA-256.

    The same value as ``converge.core.identity.fingerprint_of``.
    """
    raw = bytes(public_key)
    found = _fingerprints.get(raw)
    if found is None:
        found = hashlib.sha256(raw).hexdigest()
        if len(_fingerprints) >= _CACHE_LIMIT:
            _fingerprints.clear()
        _fingerprints[raw] = found
    return found


def is_fingerprint(key_id: str) -> bool:
    """Return whether ``key_id`` has the form of a fingerprint (64 lower-case hex digits)."""
    return isinstance(key_id, str) and _FINGERPRINT.match(key_id) is not None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: object, size: int) -> bytes | None:
    if not isinstance(text, str) or len(text) > 128:
        return None
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def decode_public_key(text: object) -> bytes | None:
    """Return the raw public key of a ``Converge-Signer-Key`` header, or ``None``."""
    if not isinstance(text, str):
        return None
    try:
        return _public_keys[text]
    except KeyError:
        pass
    raw = _unb64(text, _KEY_BYTES)
    if len(_public_keys) >= _CACHE_LIMIT:
        _public_keys.clear()
    _public_keys[text] = raw
    return raw


def _field(event: Event, name: str) -> object:
    if name == "actor":
        return event.actor
    head, _, rest = name.partition(".")
    value = getattr(event, head, None)
    if rest:
        return value.get(rest) if isinstance(value, Mapping) else None
    return value


def acting_agents(event: Event) -> frozenset[str]:
    """Return the ids of the agents ``event`` acts for (empty: it acts for no agent).

    The values of the fields :data:`~events.types.ACTING_AGENT_FIELDS` lists for the
    event's type (a type not listed there: its envelope ``actor``). ``None`` and empty
    strings do not count, so a task failure with no ``agent_id`` acts for no agent even
    when its ``actor`` is set: the envelope ``actor`` never turns a service's event into
    an agent's. (A verifier also checks a set ``actor`` against the signer.)
    """
    fields = ACTING_AGENT_FIELDS.get(event.type)
    if fields is None:
        return frozenset((event.actor,)) if event.actor else frozenset()
    found: set[str] = set()
    for name in fields:
        value = _field(event, name)
        if isinstance(value, str) and value:
            found.add(value)
    return frozenset(found)


class _SigningIdentity(Protocol):
    @property
    def fingerprint(self) -> str: ...

    def private_key_bytes(self) -> bytes: ...


class EventSigner:
    """Sign events with one Ed25519 private key, under the key id ``key_id``.

    ``private_key`` is the 32 raw private-key bytes or an ``Ed25519PrivateKey``;
    ``key_id`` defaults to the key's fingerprint (the agent id of its identity).
    Raises :class:`ConfigError` for any other key or an empty ``key_id``.
    """

    __slots__ = ("_key_header", "_secret", "key_id", "public_key")

    def __init__(
        self, private_key: bytes | Ed25519PrivateKey, *, key_id: str | None = None
    ) -> None:
        if isinstance(private_key, Ed25519PrivateKey):
            seed = private_key.private_bytes_raw()
        elif isinstance(private_key, bytes | bytearray) and len(private_key) == _KEY_BYTES:
            seed = bytes(private_key)
        else:
            raise ConfigError(
                "private_key must be 32 raw Ed25519 private-key bytes or an "
                f"Ed25519PrivateKey, got {type(private_key).__name__}"
            )
        # Signatures are made with libsodium (PyNaCl), about a third cheaper per event
        # than OpenSSL's through ``cryptography``; Ed25519 is deterministic, so both give
        # the same bytes (tests/events/test_signing_libsodium.py checks it).
        public_key, self._secret = crypto_sign_seed_keypair(seed)
        #: The 32 raw public-key bytes, as an identity registry keeps them.
        self.public_key: bytes = public_key
        if key_id is None:
            key_id = key_fingerprint(self.public_key)
        if not isinstance(key_id, str) or not key_id or any(c in key_id for c in "\r\n"):
            raise ConfigError(f"key_id must be a non-empty one-line string, got {key_id!r}")
        self._key_header = _b64(self.public_key)
        self.key_id = key_id

    @classmethod
    def from_identity(cls, identity: _SigningIdentity) -> EventSigner:
        """Return a signer of ``identity`` (a ``converge.core.Identity`` with its private key).

        Raises ``VerificationError`` for a verify-only identity.
        """
        return cls(identity.private_key_bytes(), key_id=identity.fingerprint)

    def sign(self, subject: str, body: bytes, event_type: str) -> str:
        """Return the base64url signature (no padding) of ``subject``, type and ``body``."""
        payload = signed_payload(subject, body, event_type)
        text = _b64(crypto_sign(payload, self._secret)[:_SIGNATURE_BYTES])
        _SIGNED_HERE.remember(text, self.public_key, payload)
        return text

    def headers(self, subject: str, body: bytes, event_type: str) -> dict[str, str]:
        """Return the signature headers for an event stored on ``subject`` with ``body``."""
        return {
            HDR_SIGNER: self.key_id,
            HDR_SIGNER_KEY: self._key_header,
            HDR_SIGNATURE: self.sign(subject, body, event_type),
        }

    def add_headers(
        self, headers: dict[str, str], subject: str, body: bytes, event: Event | None = None
    ) -> None:
        """Add the signature headers to ``headers`` (which name the event type) in place."""
        event_type = headers.get(HDR_EVENT_TYPE) or (event.type if event is not None else "")
        headers[HDR_SIGNER] = self.key_id
        headers[HDR_SIGNER_KEY] = self._key_header
        headers[HDR_SIGNATURE] = self.sign(subject, body, event_type)

    def __repr__(self) -> str:
        return f"EventSigner(key_id={self.key_id!r})"


class SignerRing:
    """Sign each event as the agent it acts for, from the keys of one process's agents.

    An event whose acting agents (:func:`acting_agents`) are exactly one agent held
    here is signed with that agent's key; any other event (a service's, or one acting
    for an agent whose key is not here) with ``default``, or left unsigned when there
    is no default. Give a ring as the ``signer`` of an event log, then :meth:`add` the
    agents as they start; concurrent agents sharing the log each sign as themselves.
    """

    __slots__ = ("_signers", "default")

    def __init__(
        self, default: EventSigner | None = None, signers: Iterable[EventSigner] = ()
    ) -> None:
        if default is not None and not isinstance(default, EventSigner):
            raise ConfigError(f"default must be an EventSigner, got {type(default).__name__}")
        self.default = default
        self._signers: dict[str, EventSigner] = {}
        for signer in signers:
            self.add(signer)

    def add(self, signer: EventSigner) -> None:
        """Sign the events acting for ``signer.key_id`` with ``signer``."""
        if not isinstance(signer, EventSigner):
            raise ConfigError(f"expected an EventSigner, got {type(signer).__name__}")
        self._signers[signer.key_id] = signer

    def add_identity(self, identity: _SigningIdentity) -> EventSigner:
        """Add a signer of ``identity`` (see :meth:`EventSigner.from_identity`); return it."""
        signer = EventSigner.from_identity(identity)
        self.add(signer)
        return signer

    def discard(self, key_id: str) -> None:
        """Stop signing as ``key_id`` (no-op when absent)."""
        self._signers.pop(key_id, None)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._signers

    def __len__(self) -> int:
        return len(self._signers)

    def signer_for(self, event: Event) -> EventSigner | None:
        """Return the signer ``event`` is signed with (``None``: left unsigned)."""
        agents = acting_agents(event)
        if agents and event.actor:
            agents = agents | {event.actor}
        if len(agents) == 1:
            (agent,) = agents
            signer = self._signers.get(agent)
            if signer is not None:
                return signer
        return self.default

    def add_headers(
        self, headers: dict[str, str], subject: str, body: bytes, event: Event | None = None
    ) -> None:
        """Add the signature headers of the signer for ``event`` to ``headers``."""
        signer = self.default if event is None else self.signer_for(event)
        if signer is not None:
            signer.add_headers(headers, subject, body, event)

    def __repr__(self) -> str:
        return f"SignerRing(default={self.default!r}, agents={len(self._signers)})"


def check_signer(signer: object) -> EventSigner | SignerRing | None:
    """Return ``signer`` when it is ``None``, an ``EventSigner`` or a ``SignerRing``.

    Raises :class:`ConfigError` otherwise (for event log constructors).
    """
    if signer is None or isinstance(signer, EventSigner | SignerRing):
        return signer
    raise ConfigError(f"signer must be an EventSigner or a SignerRing, got {type(signer).__name__}")


class _SignedHere:
    """The last signatures this process made, so it need not verify its own events again.

    A process folds the events it has just appended (from the append's ack or its own
    subscription), and checking an Ed25519 signature costs about three times making one.
    A signature this process made over exactly these bytes with exactly this key is
    valid by construction: :func:`verify_event_signature` accepts it after comparing a
    digest of the payload instead of running the curve arithmetic. Anything not
    remembered (another process's event, a replay after the window, a tampered body
    with a copied signature) is verified in full. Bounded: the oldest entries go first.
    """

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = 16_384) -> None:
        self._limit = limit
        # keyed by the signature as its header carries it (base64url): an own event is
        # recognised before anything is decoded. An OrderedDict, not a dict: dropping a
        # plain dict's first key again and again leaves deleted slots at its front that
        # ``next(iter(d))`` walks over each time (6 us a call when full, against 0.3).
        self._entries: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()

    def remember(self, signature: str, public_key: bytes, payload: bytes) -> None:
        entries = self._entries
        if len(entries) >= self._limit:
            entries.popitem(last=False)  # the oldest
        entries[signature] = (public_key, hashlib.blake2b(payload, digest_size=16).digest())

    def vouches(self, signature: str, public_key: bytes, payload: bytes) -> bool:
        known = self._entries.get(signature)
        return (
            known is not None
            and known[0] == public_key
            and known[1] == hashlib.blake2b(payload, digest_size=16).digest()
        )


_SIGNED_HERE = _SignedHere()


def _verify(signature: bytes, payload: bytes, public_key: bytes) -> bool:
    """Check an Ed25519 signature with libsodium, about half OpenSSL's cost here.

    libsodium is the stricter of the two (it also refuses small-order keys and
    non-canonical encodings), so nothing OpenSSL would refuse passes.
    """
    try:
        crypto_sign_open(signature + payload, public_key)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_event_signature(
    subject: str, body: bytes, signature_b64: str, public_key: bytes, event_type: str
) -> bool:
    """Return whether ``signature_b64`` is ``public_key``'s signature of the event.

    Never raises: a malformed signature or key gives ``False``.
    """
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != _KEY_BYTES:
        return False
    raw_key = bytes(public_key)
    payload = signed_payload(subject, body, event_type)
    if isinstance(signature_b64, str) and _SIGNED_HERE.vouches(signature_b64, raw_key, payload):
        return True
    signature = _unb64(signature_b64, _SIGNATURE_BYTES)
    if signature is None:
        return False
    return _verify(signature, payload, raw_key)
