"""Signed, immutable agent-to-agent messages, encoded as msgpack."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from nacl.bindings import crypto_sign_open as _sign_open
from nacl.exceptions import BadSignatureError

from converge.core._codec import (
    canonical,
    check_bytes,
    check_number,
    check_optional_str,
    check_str,
    check_value,
    packb,
    require,
    unpackb,
)
from converge.core.aead import decrypt, encrypt
from converge.core.identity import Identity
from converge.core.topic import Topic
from converge.errors import DecodeError

__all__ = ["ENCRYPTED_KEY", "MAX_MESSAGE_BYTES", "Message"]

MAX_MESSAGE_BYTES = 1 << 20
"""Default largest encoded message :meth:`Message.from_bytes` accepts (1 MiB)."""

ENCRYPTED_KEY = "_encrypted"
"""Payload key that holds the ciphertext of an encrypted payload."""

_AAD_PREFIX = b"converge.message.payload:"


def _new_id() -> str:
    return str(uuid.uuid4())


def _coerce_topics(value: object) -> tuple[Topic, ...]:
    if isinstance(value, str | bytes | Mapping | Topic) or not isinstance(value, Iterable):
        raise DecodeError(f"Message.topics must be a list of topics, got {type(value).__name__}")
    return tuple(Topic.coerce(item) for item in value)


@dataclass(frozen=True)
class Message:
    """An immutable message from ``sender`` (an agent id) to ``recipient`` or to topics.

    ``timestamp`` is wall-clock Unix seconds (float). ``signature`` is the sender's
    Ed25519 signature over every other field (see :meth:`signing_bytes`), or ``None``.
    ``topics`` accepts Topic objects, dicts or namespace strings and is stored as a
    tuple of :class:`Topic`. ``payload`` is usually a dict; any msgpack-able value
    (str, number, list...) is accepted too, as in the seed design. Raises
    ``DecodeError`` (a ``ValueError``) for wrong field types or a payload that msgpack
    cannot encode.
    """

    sender: str
    recipient: str | None = None
    topics: tuple[Topic, ...] = ()
    payload: Any = field(default_factory=dict)
    task_id: str | None = None
    id: str = field(default_factory=_new_id)
    timestamp: float = field(default_factory=time.time)
    signature: bytes | None = None

    def __post_init__(self) -> None:
        check_str(self.sender, "Message.sender")
        check_optional_str(self.recipient, "Message.recipient")
        check_optional_str(self.task_id, "Message.task_id")
        check_str(self.id, "Message.id", allow_empty=False)
        check_number(self.timestamp, "Message.timestamp")
        object.__setattr__(self, "topics", _coerce_topics(self.topics))
        object.__setattr__(self, "payload", check_value(self.payload, "Message.payload"))
        signature = self.signature
        if signature is not None:
            signature = check_bytes(signature, "Message.signature") or None
        object.__setattr__(self, "signature", signature)

    def __hash__(self) -> int:
        return hash(self.id)

    # -- signing ---------------------------------------------------------------

    def signing_bytes(self) -> bytes:
        """Return the deterministic msgpack encoding of every field but the signature."""
        # msgpack.packb({k: canonical(v) ...}) of these fields in this order, byte for byte
        # (tests/core/test_core_message_fast.py), with a pooled Packer as in to_bytes
        data = {
            "id": self.id,
            "sender": self.sender,
            "recipient": self.recipient,
            "topics": [canonical(t.to_dict()) for t in self.topics] if self.topics else [],
            "payload": _canonical(self.payload),
            "task_id": self.task_id,
            "timestamp": self.timestamp,
        }
        return _pack(data)

    def sign(self, identity: Identity) -> Message:
        """Return a copy sent by ``identity.fingerprint`` and signed by ``identity``.

        Raises ``MissingPrivateKeyError`` (a ``VerificationError`` and ``ValueError``)
        when ``identity`` has no private key.
        """
        unsigned = dataclasses.replace(self, sender=identity.fingerprint, signature=None)
        return dataclasses.replace(unsigned, signature=identity.sign(unsigned.signing_bytes()))

    def verify(self, public_key: bytes | Identity) -> bool:
        """Return whether the signature is valid for ``public_key`` (32 bytes or an Identity).

        Returns ``False`` for a missing, malformed or forged signature. Raises
        ``DecodeError`` only when ``public_key`` itself is not a 32-byte key.
        """
        if not self.signature:
            return False
        if isinstance(public_key, Identity):
            raw_key = public_key.public_key
        elif type(public_key) is bytes and len(public_key) == _KEY_BYTES:
            raw_key = public_key
        else:  # the key check (and DecodeError) of Identity
            raw_key = Identity.from_public_key(public_key).public_key
        if len(self.signature) != _SIGNATURE_BYTES:
            return False
        # libsodium (PyNaCl), about half the cost of OpenSSL's check through cryptography,
        # as for event signatures (events/signing.py); it is the stricter of the two (it
        # also refuses small-order keys), so nothing OpenSSL refuses passes
        try:
            _sign_open(self.signature + self.signing_bytes(), raw_key)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True

    @property
    def is_signed(self) -> bool:
        """Whether the message carries a signature (valid or not)."""
        return self.signature is not None

    # -- encryption ------------------------------------------------------------

    @property
    def is_encrypted(self) -> bool:
        """Whether the payload is an encrypted payload made by :meth:`encrypt_payload`."""
        if not isinstance(self.payload, dict):
            return False
        return set(self.payload) == {ENCRYPTED_KEY} and isinstance(
            self.payload[ENCRYPTED_KEY], bytes
        )

    def _aad(self) -> bytes:
        return _AAD_PREFIX + self.id.encode("utf-8")

    def encrypt_payload(self, key: bytes) -> Message:
        """Return an unsigned copy whose payload is ``{"_encrypted": ciphertext}``.

        ChaCha20-Poly1305 with a 32-byte ``key``; the ciphertext is bound to the
        message id. Sign after encrypting. Raises ``DecodeError`` for a bad key length.
        """
        ciphertext = encrypt(packb(self.payload), key, associated_data=self._aad())
        return dataclasses.replace(self, payload={ENCRYPTED_KEY: ciphertext}, signature=None)

    def decrypt_payload(self, key: bytes) -> Message:
        """Return an unsigned copy with the payload decrypted; ``self`` if not encrypted.

        Raises ``VerificationError`` for a wrong key or tampered ciphertext and
        ``DecodeError`` for a bad key length or a malformed encrypted payload.
        """
        if not isinstance(self.payload, dict) or ENCRYPTED_KEY not in self.payload:
            return self
        ciphertext = check_bytes(self.payload[ENCRYPTED_KEY], f"Message.payload[{ENCRYPTED_KEY!r}]")
        plaintext = decrypt(ciphertext, key, associated_data=self._aad())
        payload = unpackb(plaintext, max_size=len(plaintext), what="decrypted payload")
        return dataclasses.replace(
            self, payload=check_value(payload, "decrypted payload"), signature=None
        )

    # -- encoding --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the message as plain data (topics as dicts, signature as bytes or None)."""
        return {
            "id": self.id,
            "sender": self.sender,
            "recipient": self.recipient,
            "topics": [t.to_dict() for t in self.topics],
            "payload": dict(self.payload) if isinstance(self.payload, dict) else self.payload,
            "task_id": self.task_id,
            "timestamp": self.timestamp,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Build a message from :meth:`to_dict` output; unknown keys are ignored.

        ``sender``, ``id`` and ``timestamp`` are required. Raises ``DecodeError``
        naming the field for anything missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise DecodeError(f"Invalid message: expected a dict, got {type(data).__name__}")
        topics = data.get("topics")
        return cls(
            sender=require(data, "sender", "Message"),
            recipient=data.get("recipient"),
            topics=() if topics is None else topics,
            payload=data.get("payload", {}),
            task_id=data.get("task_id"),
            id=require(data, "id", "Message"),
            timestamp=require(data, "timestamp", "Message"),
            signature=data.get("signature"),
        )

    def to_bytes(self) -> bytes:
        """Return the message (signature included) as deterministic msgpack."""
        # packb(self.to_dict()) byte for byte (a hypothesis test checks it), without the
        # copy of to_dict and the sort of the top-level keys: written here in sorted order
        wire = {
            "id": self.id,
            "payload": _canonical(self.payload),
            "recipient": self.recipient,
            "sender": self.sender,
            "signature": self.signature,
            "task_id": self.task_id,
            "timestamp": self.timestamp,
            "topics": [canonical(t.to_dict()) for t in self.topics] if self.topics else [],
        }
        return _pack(wire)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Message:
        """Decode :meth:`to_bytes` output of at most ``max_size`` bytes.

        Raises ``DecodeError`` (message starting "Invalid message") for oversize,
        truncated or malformed bytes and for wrong field types; nothing else escapes.

        Bytes as :meth:`to_bytes` writes them take a fast path (one msgpack decode, one
        walk of the payload, no second validation in ``__post_init__``); anything
        unusual, valid or not, goes the checked way, so the message or the
        ``DecodeError`` is always the checked path's (``tests/core/test_core_message_fast.py``).
        """
        if type(data) is bytes and 0 < len(data) <= max_size:
            try:
                value = _unpackb(data, raw=False, strict_map_key=True, timestamp=0)
            except Exception:  # malformed: the checked path names the error
                value = None
            # eight keys, each of them read by _build_fast: exactly the wire keys
            if type(value) is dict and len(value) == _WIRE_KEY_COUNT:
                try:
                    return cls._build_fast(value)
                except (_NotFast, KeyError):
                    pass
        return cls._from_bytes_checked(data, max_size=max_size)

    @classmethod
    def _from_bytes_checked(cls, data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Message:
        """Decode like :meth:`from_bytes`, validating every field through ``__init__``."""
        value = unpackb(data, max_size=max_size, what="message")
        if not isinstance(value, dict):
            raise DecodeError(
                f"Invalid message bytes: expected a msgpack map, got {type(value).__name__}"
            )
        return cls.from_dict(value)

    @classmethod
    def _build_fast(cls, data: dict[str, Any]) -> Message:
        """Build the message of :meth:`from_bytes` from decoded msgpack; raise ``_NotFast``.

        A missing key raises ``KeyError``, which also sends the input the checked way.
        """
        sender = data["sender"]
        recipient = data["recipient"]
        task_id = data["task_id"]
        message_id = data["id"]
        timestamp = data["timestamp"]
        signature = data["signature"]
        if (
            type(sender) is not str
            or (recipient is not None and type(recipient) is not str)
            or (task_id is not None and type(task_id) is not str)
            or type(message_id) is not str
            or not message_id
            or (signature is not None and type(signature) is not bytes)
        ):
            raise _NotFast
        # msgpack ints are always within the 64-bit range check_number asks for
        if (
            not (type(timestamp) is float and math.isfinite(timestamp))
            and type(timestamp) is not int
        ):
            raise _NotFast
        raw_topics = data["topics"]
        if type(raw_topics) is not list:
            raise _NotFast
        topics: tuple[Topic, ...] = ()
        if raw_topics:
            _check_plain(raw_topics, 1)
            try:
                topics = tuple(Topic.from_dict(item) for item in raw_topics)
            except DecodeError:
                raise _NotFast from None
        payload = data["payload"]
        _check_plain(payload, 1)
        message = _new_object(cls)
        # one key at a time, in field order: keeps the compact instance dict of __init__
        values = message.__dict__
        values["sender"] = sender
        values["recipient"] = recipient
        values["topics"] = topics
        values["payload"] = payload  # fresh from msgpack: nobody else holds it
        values["task_id"] = task_id
        values["id"] = message_id
        values["timestamp"] = timestamp
        values["signature"] = signature or None
        return message


class _NotFast(Exception):
    """Raised inside :meth:`Message._build_fast` for input only the checked path handles."""


_WIRE_KEY_COUNT = 8  # id, payload, recipient, sender, signature, task_id, timestamp, topics
_new_object = object.__new__
_POOL_SIZE = 8
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, autoreset=True)


_PACKERS: list[msgpack.Packer] = []


def _pack(value: dict[str, Any]) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, with a Packer of the pool.

    msgpack.packb builds a new Packer per call (about 0.4 us); list pop and append are
    atomic, so two threads never share one.
    """
    packer = _PACKERS.pop() if _PACKERS else _new_packer()
    encoded: bytes = packer.pack(value)  # resets itself after an error too
    if len(_PACKERS) < _POOL_SIZE:
        _PACKERS.append(packer)
    return encoded


_unpackb = msgpack.unpackb
_SCALARS = frozenset((str, bytes, int, float, bool, type(None)))
_FAST_DEPTH = 60  # below check_value's MAX_DEPTH (64): deeper input takes the checked path


def _check_plain(value: object, depth: int) -> None:
    """Raise ``_NotFast`` unless decoded msgpack ``value`` is what ``check_value`` keeps as is.

    That is ``None``, bool, int, float, str, bytes, lists and dicts with ``str`` keys, not
    nested too deep (msgpack gives no tuples, bytearrays or out-of-range ints).
    """
    kind = type(value)
    if kind in _SCALARS:
        return
    if depth >= _FAST_DEPTH:
        raise _NotFast
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise _NotFast
            if type(item) not in _SCALARS:
                _check_plain(item, depth + 1)
    elif kind is list:
        for item in value:  # type: ignore[attr-defined]
            if type(item) not in _SCALARS:
                _check_plain(item, depth + 1)
    else:
        raise _NotFast


def _canonical(value: Any) -> Any:
    """Return :func:`canonical` of ``value``, faster for plain dicts, lists and scalars."""
    kind = type(value)
    if kind is dict:
        out = {}
        for key in sorted(value):
            item = value[key]
            out[key] = item if type(item) in _SCALARS else _canonical(item)
        return out
    if kind is list:
        return [item if type(item) in _SCALARS else _canonical(item) for item in value]
    if kind in _SCALARS:
        return value
    return canonical(value)
