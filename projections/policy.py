"""A namespace's signature policy, recorded in its own stream so every process agrees.

The policy is a :class:`~events.SignaturePolicySet` event on subject
``config.signatures`` (stream ``<NS>_CONFIG``). It counts only when validly signed:
the first one by any key (or, when the reader pins trusted ids, by one of those), each
later one by a key the policy in force trusts. Unsigned or otherwise signed policy
events are ignored and logged, so a publisher without a trusted key cannot turn
verification off. :func:`ensure_signature_policy` writes the first policy of a
namespace (``expected_version=0``, so two processes racing agree on one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from converge.errors import ConcurrencyError, ConfigError, NotFoundError
from events import EventLog, SignaturePolicySet
from projections.verify import KeyLookup, SignatureVerifier, authenticated_signer

__all__ = [
    "POLICY_STREAM",
    "POLICY_SUBJECT",
    "SignaturePolicy",
    "ensure_signature_policy",
    "load_signature_policy",
    "verifier_for",
]

logger = logging.getLogger(__name__)

POLICY_STREAM = "config"
POLICY_SUBJECT = "config.signatures"


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """The signature rule in force in a namespace, and who set it at which sequence."""

    require_signatures: bool
    trusted_signers: frozenset[str]
    set_by: str
    sequence: int


async def load_signature_policy(
    log: EventLog, *, pinned: Iterable[str] = ()
) -> SignaturePolicy | None:
    """Return the namespace's policy in force, or ``None`` when none was set validly.

    ``pinned``: key ids this process trusts whatever the stream says; when given, the
    first policy must be signed by one of them. Reads only (creates no stream).
    """
    pins = frozenset(pinned)
    try:
        return await _load(log, pins)
    except NotFoundError:  # a read-only log names a missing stream: no policy recorded
        return None


async def _load(log: EventLog, pins: frozenset[str]) -> SignaturePolicy | None:
    policy: SignaturePolicy | None = None
    async for recorded in log.read(stream=POLICY_STREAM, subject=POLICY_SUBJECT):
        event = recorded.event
        if not isinstance(event, SignaturePolicySet):
            continue
        signer = authenticated_signer(recorded)
        if policy is None:
            allowed = signer is not None and (not pins or signer in pins)
        else:
            allowed = signer is not None and (signer in policy.trusted_signers or signer in pins)
        if not allowed or signer is None:
            logger.warning(
                "ignoring signature policy at %s seq %d: signer %r may not set it",
                recorded.subject,
                recorded.sequence,
                signer,
                extra={"stream": recorded.stream, "seq": recorded.sequence},
            )
            continue
        policy = SignaturePolicy(
            event.require_signatures, frozenset(event.trusted_signers), signer, recorded.sequence
        )
    return policy


async def ensure_signature_policy(
    log: EventLog,
    *,
    require_signatures: bool = True,
    trusted_signers: Iterable[str] = (),
    pinned: Iterable[str] = (),
) -> SignaturePolicy:
    """Return the namespace's policy, first recording this one when it has none.

    ``log`` must sign the policy event with a key that ``trusted_signers`` lists (a
    log whose signer is a ``SignerRing`` signs it with the ring's default key).
    Raises :class:`ConfigError` when the recorded policy does not take (unsigned log).
    """
    pins = tuple(pinned)
    policy = await load_signature_policy(log, pinned=pins)
    if policy is not None:
        return policy
    event = SignaturePolicySet(
        require_signatures=require_signatures, trusted_signers=sorted(set(trusted_signers))
    )
    try:
        await log.append(event, subject=POLICY_SUBJECT, expected_version=0)
    except ConcurrencyError:
        logger.info("another process recorded the signature policy first; using theirs")
    policy = await load_signature_policy(log, pinned=pins)
    if policy is None:
        raise ConfigError(
            f"the signature policy of namespace {log.namespace!r} is not in force: the "
            "log writing it must sign events with a trusted key (and the first policy must "
            "be signed validly); see docs/security.md"
        )
    return policy


def verifier_for(
    policy: SignaturePolicy | None,
    *,
    keys: KeyLookup | None = None,
    trusted: Iterable[str] = (),
    require_signatures: bool = False,
) -> SignatureVerifier:
    """Return a verifier enforcing ``policy`` (or, without one, ``require_signatures``).

    ``trusted`` adds this process's pinned ids to the policy's trusted signers.
    """
    if policy is None:
        return SignatureVerifier(keys, require=require_signatures, trusted=trusted)
    return SignatureVerifier(
        keys,
        require=policy.require_signatures,
        trusted={*policy.trusted_signers, *trusted},
    )
