"""Check who wrote a recorded event before a projection folds it.

The rule (docs/security.md): an agent's id is the fingerprint of its Ed25519 key, so an
event acting for agent X (the fields of :data:`events.types.ACTING_AGENT_FIELDS`, and
the envelope ``actor``) must be signed by the key whose fingerprint is X, or by an
identity the deployment trusts. No registry is needed: the ``Converge-Signer-Key``
header carries the public key and its fingerprint must be the ``Converge-Signer`` id;
a ``keys`` lookup (``IdentityRegistry.get``, discovery) may supply keys instead.

A :class:`~projections.runner.ProjectionRunner` given a :class:`SignatureVerifier`
skips rejected events: their sequence counts as passed (and moves their subject's
version), the projection never sees them. Every rejection is logged, counted per
reason in :attr:`SignatureVerifier.rejections` and kept, with its stream, subject and
sequence, in :attr:`SignatureVerifier.recent`.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Final

from converge.errors import ConfigError, DecodeError
from events import RecordedEvent, encode_event
from events.signing import (
    HDR_SIGNATURE,
    HDR_SIGNER,
    HDR_SIGNER_KEY,
    acting_agents,
    decode_public_key,
    is_fingerprint,
    key_fingerprint,
    verify_event_signature,
)

__all__ = ["REASONS", "Rejection", "SignatureVerifier", "authenticated_signer"]

logger = logging.getLogger(__name__)

KeyLookup = Callable[[str], bytes | None]

UNSIGNED: Final = "unsigned"
PARTIAL: Final = "partial-signature"
UNKNOWN_SIGNER: Final = "unknown-signer"
KEY_MISMATCH: Final = "key-mismatch"
BAD_SIGNATURE: Final = "bad-signature"
UNREADABLE: Final = "unreadable-body"
IMPERSONATION: Final = "impersonation"
UNTRUSTED: Final = "untrusted-signer"

#: Every reason a verifier rejects an event for, as counted in ``rejections``.
REASONS: tuple[str, ...] = (
    UNSIGNED,
    PARTIAL,
    UNKNOWN_SIGNER,
    KEY_MISMATCH,
    BAD_SIGNATURE,
    UNREADABLE,
    IMPERSONATION,
    UNTRUSTED,
)

RECENT_REJECTIONS = 100
"""How many rejections a verifier keeps in :attr:`SignatureVerifier.recent`."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused event: why, and where it is stored."""

    reason: str
    detail: str
    stream: str
    subject: str
    sequence: int
    event_type: str
    event_id: str
    signer: str | None

    def to_dict(self) -> dict[str, object]:
        """Return the record as plain data."""
        return asdict(self)


class _Refused(Exception):
    def __init__(self, reason: str, detail: str, signer: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.signer = signer


def _lookup(keys: KeyLookup | None, key_id: str) -> bytes | None:
    if keys is None:
        return None
    try:
        found = keys(key_id)
    except Exception as exc:  # a failing lookup is an unknown signer, never a crash
        logger.debug("key lookup for %r failed: %r", key_id, exc)
        return None
    return found if isinstance(found, bytes | bytearray) else None


def _authenticate(recorded: RecordedEvent, keys: KeyLookup | None) -> str | None:
    """Return the authenticated signer id of ``recorded`` (``None``: unsigned), or raise."""
    headers = recorded.headers
    signature = headers.get(HDR_SIGNATURE) if headers else None
    key_id = headers.get(HDR_SIGNER) if headers else None
    if signature is None and key_id is None:
        return None
    if not signature or not key_id:
        raise _Refused(PARTIAL, f"it has only one of {HDR_SIGNER}/{HDR_SIGNATURE}")
    public_key = _lookup(keys, key_id)
    if public_key is None and headers is not None:
        public_key = decode_public_key(headers.get(HDR_SIGNER_KEY))
        if public_key is not None and not is_fingerprint(key_id):
            raise _Refused(
                UNKNOWN_SIGNER,
                f"signer {key_id!r} is not a key fingerprint and no key lookup knows it",
                key_id,
            )
    if public_key is None:
        raise _Refused(UNKNOWN_SIGNER, f"no public key for signer {key_id!r}", key_id)
    if is_fingerprint(key_id) and key_fingerprint(public_key) != key_id:
        raise _Refused(
            KEY_MISMATCH, f"the key given for signer {key_id[:12]} has another fingerprint", key_id
        )
    body = recorded.body
    if body is None:
        try:
            body = encode_event(recorded.event)[0]
        except DecodeError as exc:
            raise _Refused(UNREADABLE, f"its body cannot be re-encoded: {exc}", key_id) from exc
    if not verify_event_signature(
        recorded.subject, body, signature, bytes(public_key), recorded.event.type
    ):
        raise _Refused(BAD_SIGNATURE, f"the signature of signer {key_id!r} does not verify", key_id)
    return key_id


def authenticated_signer(recorded: RecordedEvent, keys: KeyLookup | None = None) -> str | None:
    """Return the id of the key that validly signed ``recorded``, else ``None``."""
    try:
        return _authenticate(recorded, keys)
    except _Refused:
        return None


class SignatureVerifier:
    """Accept or reject recorded events by who signed them and whom they act for.

    * unsigned: accepted (counted in ``unsigned``) unless ``require``;
    * only one signature header, no key for the signer, a key whose fingerprint is not
      the signer id, a wrong signature: rejected;
    * with ``match_actor`` (the default), an event acting for an agent (see
      :func:`events.signing.acting_agents`) signed by another key, or whose ``actor``
      is set to another agent: rejected, unless the signer is ``trusted`` (a
      deployment's services act for any agent);
    * with ``require`` and ``match_actor``, an event acting for no agent (a service's:
      a cancellation, a failure with no ``agent_id``...) signed by a key that is not
      ``trusted``: rejected, whatever its ``actor`` says.

    ``match_actor=False`` turns both who-acts rules off (only the signature counts),
    for key ids that are not agent ids.

    ``keys`` (optional) looks up a public key by signer id (``IdentityRegistry.get``
    fits); it must be cheap, and an error from it counts as an unknown signer. Without
    it, keys come from the ``Converge-Signer-Key`` header. Rejections are logged
    (warning, with stream, subject and sequence), counted in ``rejected`` and per
    reason in ``rejections``, and the last ones kept in ``recent``.
    """

    def __init__(
        self,
        keys: KeyLookup | None = None,
        *,
        require: bool = False,
        match_actor: bool = True,
        trusted: Iterable[str] = (),
    ) -> None:
        if keys is not None and not callable(keys):
            raise ConfigError(
                f"keys must be a callable key id -> public key bytes (e.g. "
                f"IdentityRegistry.get), got {type(keys).__name__}"
            )
        if isinstance(trusted, str):
            raise ConfigError("trusted must be a collection of key ids, not one string")
        self._keys = keys
        self.require = bool(require)
        self.match_actor = bool(match_actor)
        self.trusted: set[str] = {str(t) for t in trusted}
        self.accepted = 0
        self.rejected = 0
        self.unsigned = 0
        self.rejections: Counter[str] = Counter()
        self.recent: deque[Rejection] = deque(maxlen=RECENT_REJECTIONS)

    def __call__(self, recorded: RecordedEvent) -> bool:
        """Return whether ``recorded`` may be applied (see :meth:`check`)."""
        return self.check(recorded)

    def check(self, recorded: RecordedEvent) -> bool:
        """Return whether ``recorded`` may be applied; count and log a rejection."""
        try:
            signer = _authenticate(recorded, self._keys)
            if signer is None:
                if self.require:
                    raise _Refused(UNSIGNED, "it is not signed and signatures are required")
                self.unsigned += 1
                return True
            self._authorize(recorded, signer)
        except _Refused as refused:
            return self._reject(recorded, refused)
        self.accepted += 1
        return True

    def _authorize(self, recorded: RecordedEvent, signer: str) -> None:
        if signer in self.trusted or not self.match_actor:
            return
        event = recorded.event
        agents = acting_agents(event)
        if agents:
            if event.actor:
                agents = agents | {event.actor}
            others = sorted(a for a in agents if a != signer)
            if others:
                raise _Refused(
                    IMPERSONATION,
                    f"signer {signer[:16]!r} is not the agent it acts for ({others[0][:16]!r})",
                    signer,
                )
        elif self.require:
            raise _Refused(
                UNTRUSTED,
                f"it acts for no agent and signer {signer[:16]!r} is not a trusted identity",
                signer,
            )

    def _reject(self, recorded: RecordedEvent, refused: _Refused) -> bool:
        self.rejected += 1
        self.rejections[refused.reason] += 1
        event = recorded.event
        self.recent.append(
            Rejection(
                refused.reason,
                refused.detail,
                recorded.stream,
                recorded.subject,
                recorded.sequence,
                event.type,
                event.id,
                refused.signer,
            )
        )
        logger.warning(
            "rejecting %s event %s in stream %s seq %d (%s): %s: %s",
            event.type,
            event.id,
            recorded.stream,
            recorded.sequence,
            recorded.subject,
            refused.reason,
            refused.detail,
            extra={"stream": recorded.stream, "seq": recorded.sequence},
        )
        return False

    def summary(self) -> dict[str, object]:
        """Return the counters and the recent rejections as plain data."""
        return {
            "require": self.require,
            "trusted": sorted(self.trusted),
            "accepted": self.accepted,
            "unsigned": self.unsigned,
            "rejected": self.rejected,
            "by_reason": dict(self.rejections),
            "recent": [r.to_dict() for r in self.recent],
        }

    def __repr__(self) -> str:
        return (
            f"SignatureVerifier(require={self.require}, accepted={self.accepted}, "
            f"rejected={self.rejected}, unsigned={self.unsigned})"
        )
