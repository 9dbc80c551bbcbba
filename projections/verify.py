"""Check the Ed25519 signatures of recorded events before a projection folds them.

A :class:`SignatureVerifier` looks up the ``Converge-Signer`` header's key id with
``keys`` (``IdentityRegistry.get`` fits) and checks ``Converge-Signature`` over the
relative subject and the stored body (see :mod:`events.signing`). A
:class:`~projections.runner.ProjectionRunner` given one skips rejected events: their
sequence counts as passed, the projection never sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from converge.errors import ConfigError, DecodeError
from events import RecordedEvent, encode_event
from events.signing import HDR_SIGNATURE, HDR_SIGNER, verify_event_signature

__all__ = ["SignatureVerifier"]

logger = logging.getLogger(__name__)

KeyLookup = Callable[[str], bytes | None]


class SignatureVerifier:
    """Accept or reject recorded events by their signature headers.

    * no signature headers: accepted, unless ``require`` (then rejected);
    * a signer ``keys`` does not know, a malformed or a wrong signature: rejected;
    * with ``match_actor``, a signed event whose ``actor`` is set and is not the
      signer: rejected.

    Rejections are logged (warning, with stream and sequence) and counted in
    ``rejected``; ``accepted`` and ``unsigned`` count the others. ``keys`` must be
    cheap and must not raise (an error from it counts as an unknown signer).
    """

    def __init__(
        self, keys: KeyLookup, *, require: bool = False, match_actor: bool = False
    ) -> None:
        if not callable(keys):
            raise ConfigError(
                f"keys must be a callable key id -> public key bytes (e.g. "
                f"IdentityRegistry.get), got {type(keys).__name__}"
            )
        self._keys = keys
        self.require = bool(require)
        self.match_actor = bool(match_actor)
        self.accepted = 0
        self.rejected = 0
        self.unsigned = 0

    def __call__(self, recorded: RecordedEvent) -> bool:
        """Return whether ``recorded`` may be applied (see :meth:`check`)."""
        return self.check(recorded)

    def check(self, recorded: RecordedEvent) -> bool:
        """Return whether ``recorded`` may be applied; count and log a rejection."""
        headers = recorded.headers
        signature = headers.get(HDR_SIGNATURE) if headers else None
        signer = headers.get(HDR_SIGNER) if headers else None
        if signature is None and signer is None:
            if self.require:
                return self._reject(recorded, "it is not signed and signatures are required")
            self.unsigned += 1
            return True
        if not signature or not signer:
            return self._reject(recorded, f"it has only one of {HDR_SIGNER}/{HDR_SIGNATURE}")
        try:
            public_key = self._keys(signer)
        except Exception as exc:  # a failing lookup is an unknown signer, never a crash
            logger.debug("key lookup for %r failed: %r", signer, exc)
            public_key = None
        if public_key is None:
            return self._reject(recorded, f"signer {signer!r} is not in the identity registry")
        body = recorded.body
        if body is None:
            try:
                body = encode_event(recorded.event)[0]
            except DecodeError as exc:
                return self._reject(recorded, f"its body cannot be re-encoded: {exc}")
        if not verify_event_signature(recorded.subject, body, signature, public_key):
            return self._reject(recorded, f"the signature of signer {signer!r} does not verify")
        if self.match_actor:
            actor = recorded.event.actor
            if actor is not None and actor != signer:
                return self._reject(recorded, f"signer {signer!r} is not its actor {actor!r}")
        self.accepted += 1
        return True

    def _reject(self, recorded: RecordedEvent, reason: str) -> bool:
        self.rejected += 1
        logger.warning(
            "rejecting event %s in stream %s seq %d (%s): %s",
            recorded.event.id,
            recorded.stream,
            recorded.sequence,
            recorded.subject,
            reason,
            extra={"stream": recorded.stream, "seq": recorded.sequence},
        )
        return False

    def __repr__(self) -> str:
        return (
            f"SignatureVerifier(require={self.require}, accepted={self.accepted}, "
            f"rejected={self.rejected}, unsigned={self.unsigned})"
        )
