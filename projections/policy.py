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

import asyncio
import logging
import time
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

WRITTEN_READ_WAIT_SEC = 10.0
"""How long a read right after a policy append may see none before it counts as absent."""


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
    return (await _load(log, frozenset(pinned)))[0]


async def _load(log: EventLog, pins: frozenset[str]) -> tuple[SignaturePolicy | None, int]:
    """Return the policy in force and how many policy events the read saw."""
    try:
        return await _read_policy(log, pins)
    except NotFoundError:  # a read-only log names a missing stream: no policy recorded
        return None, 0


async def _read_policy(log: EventLog, pins: frozenset[str]) -> tuple[SignaturePolicy | None, int]:
    policy: SignaturePolicy | None = None
    seen = 0
    async for recorded in log.read(stream=POLICY_STREAM, subject=POLICY_SUBJECT):
        event = recorded.event
        if not isinstance(event, SignaturePolicySet):
            continue
        seen += 1
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
    return policy, seen


async def _load_after_write(log: EventLog, pins: frozenset[str]) -> SignaturePolicy | None:
    """Read the policy right after appending one (or losing the race to): the subject
    holds a policy event, so a read that sees none is behind (seen on a just-created
    three-replica stream when several processes start at once): read again, for up to
    ``WRITTEN_READ_WAIT_SEC``. Policy events that do not count are final at once."""
    deadline = time.monotonic() + WRITTEN_READ_WAIT_SEC
    while True:
        policy, seen = await _load(log, pins)
        if policy is not None or seen or time.monotonic() >= deadline:
            return policy
        logger.info("the signature policy just written is not readable yet; reading again")
        await asyncio.sleep(0.1)


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
    policy = await _load_after_write(log, frozenset(pins))
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
