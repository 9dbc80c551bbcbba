"""Signed events by default: the keys, the namespace policy and the verifiers a process uses.

What ``converge run`` (and every command that writes) sets up, from the settings
``verify``, ``require_signatures``, ``trusted_signers`` and ``signing_key``
(docs/security.md):

* a **service key** (``signing_key``, default ``<data_dir>/keys/service.key``, 32 raw
  bytes, mode 0600, created on first use): it signs the events that act for no agent
  (task submissions, cancellations, claim sweeps, pool creation);
* a :class:`~events.SignerRing` with that key as default: every agent the process
  runs is enrolled, so each event is signed by the agent it acts for;
* the namespace's **signature policy** (:mod:`projections.policy`), recorded by the
  first writer (``require_signatures``, trusting its service key and
  ``trusted_signers``), then read by every process, so all enforce one rule;
* a :class:`~projections.verify.SignatureVerifier` per projection, unless ``verify``
  is off (``--no-verify``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from converge.core.identity import KEY_SIZE, Identity
from converge.errors import ConfigError, DecodeError
from events import EventLog, EventSigner, SignerRing
from projections.policy import SignaturePolicy, ensure_signature_policy, load_signature_policy
from projections.verify import SignatureVerifier

__all__ = ["SERVICE_KEY_FILE", "EventSecurity", "load_or_create_key"]

logger = logging.getLogger(__name__)

SERVICE_KEY_FILE = Path("keys") / "service.key"
"""Where, under the data directory, the service key lives by default."""

KEY_WRITE_WAIT_SEC = 2.0
"""How long a reader waits for a key file another process is writing in place."""


def load_or_create_key(path: Path) -> Identity:
    """Return the identity whose 32 raw private-key bytes are in ``path``, creating it.

    A new key file is written with mode 0600 (its directory 0700). Creation is race-free:
    the key is written whole to a temporary file beside ``path``, then hard-linked to
    ``path``, which fails when the name exists; so processes (or containers sharing a
    volume) creating it at once all end up with the one key that was linked first, and
    none ever reads a half-written file. Raises ``ConfigError`` for a file that is not
    a key.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = Identity.generate()
        if _create_exclusive(path, identity.private_key_bytes()):
            logger.info("created signing key %s (agent id %s)", path, identity.fingerprint)
            return identity
        # created by another process meanwhile: read theirs
    return _read_key(path)


def _create_exclusive(path: Path, raw: bytes) -> bool:
    """Write ``raw`` to ``path`` unless it exists; return whether this call created it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)  # atomic, and refuses an existing name
        except FileExistsError:
            return False
        except OSError as exc:  # a filesystem without hard links (vfat, some FUSE)
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_in_place(path, raw)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _create_in_place(path: Path, raw: bytes) -> bool:
    """``O_EXCL`` creation where links do not work; a reader may meet it half-written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(raw)
    return True


def _read_key(path: Path) -> Identity:
    """Read the key in ``path``; a short file may still be being written (no hard links):
    re-read it for up to ``KEY_WRITE_WAIT_SEC`` before calling it broken."""
    deadline = time.monotonic() + KEY_WRITE_WAIT_SEC
    raw = path.read_bytes()
    while len(raw) < KEY_SIZE and time.monotonic() < deadline:
        time.sleep(0.01)  # a sync function, once per process, before any broker traffic
        raw = path.read_bytes()
    if len(raw) != KEY_SIZE:
        raise ConfigError(
            f"signing key {path} holds {len(raw)} bytes, not a {KEY_SIZE}-byte Ed25519 "
            "private key; remove it to make a new one or point signing_key elsewhere"
        )
    try:
        return Identity.from_private_key(raw)
    except DecodeError as exc:  # pragma: no cover - 32 bytes are always a valid key
        raise ConfigError(f"signing key {path}: {exc}") from exc


@dataclass
class EventSecurity:
    """The signing and verification one process applies to one namespace.

    Build with :meth:`for_writer` (signs, records the policy when there is none) or
    :meth:`for_reader` (reads the policy only), then give :attr:`ring` to the event
    log (``signer=``) and :meth:`verifier` to each projection.
    """

    verify: bool
    require: bool
    trusted: frozenset[str]
    policy: SignaturePolicy | None = None
    ring: SignerRing = field(default_factory=SignerRing)
    verifiers: list[SignatureVerifier] = field(default_factory=list)
    key_path: Path | None = None

    @property
    def service_id(self) -> str | None:
        """The key id of the service key, when this process signs."""
        default = self.ring.default
        return None if default is None else default.key_id

    @classmethod
    def signing(cls, key_path: Path, *, verify: bool = True) -> EventSecurity:
        """Return a writer's security before the policy is known: its ring and service key."""
        service = EventSigner.from_identity(load_or_create_key(key_path))
        return cls(
            verify=verify,
            require=False,
            trusted=frozenset(),
            ring=SignerRing(service),
            key_path=Path(key_path),
        )

    async def load_policy(
        self,
        log: EventLog,
        *,
        record: bool,
        require_signatures: bool = True,
        trusted_signers: Iterable[str] = (),
        strict: bool = False,
        warn_untrusted: bool = True,
    ) -> SignaturePolicy | None:
        """Read the namespace's policy (with ``record``: write it first when absent).

        ``trusted_signers`` are this process's pinned ids: trusted whatever the policy
        says, and when given, only a first policy they (or the service key) signed
        counts. Without a policy, unsigned events are accepted and signed ones checked.

        When the policy does not trust this process's service key, its service events
        (pool creation, sweeps, cancels) will be refused by every verifying process: a
        warning, or with ``strict`` a ``ConfigError`` (a process that depends on them,
        such as ``converge run``, would otherwise wait for them forever). A process that
        only writes events acting for its own key (``converge tasks submit``) passes
        ``warn_untrusted=False``: those are accepted, trusted or not.
        """
        pinned = frozenset(trusted_signers)
        pins = pinned | ({self.service_id} if self.service_id and pinned else set())
        if record and self.service_id is not None:
            policy: SignaturePolicy | None = await ensure_signature_policy(
                log,
                require_signatures=require_signatures,
                trusted_signers={self.service_id, *pinned},
                pinned=pins,
            )
        else:
            policy = await load_signature_policy(log, pinned=pins)
        self.policy = policy
        if policy is None:
            self.require, self.trusted = False, pinned
        else:
            self.require = policy.require_signatures
            self.trusted = policy.trusted_signers | pinned
        service = self.service_id
        if service is not None and policy is not None and service not in self.trusted:
            problem = self._untrusted_service(log.namespace, service, policy)
            if strict:
                raise ConfigError(problem)
            if warn_untrusted:
                logger.warning("%s", problem)
        return policy

    def _untrusted_service(self, namespace: str, service: str, policy: SignaturePolicy) -> str:
        """One line: whose key the policy does not trust, and the two ways out."""
        where = f" ({self.key_path})" if self.key_path is not None else ""
        trusted = ", ".join(sorted(t[:12] for t in policy.trusted_signers)) or "none"
        return (
            f"the signature policy of namespace {namespace!r} does not trust this process's "
            f"service key {service}{where}, so its pool creation, sweeps and cancels would "
            f"be refused (it trusts {trusted}); use the trusted key file (signing_key, "
            "CONVERGE_SIGNING_KEY, or a data_dir sharing its keys/), or list this id in "
            "trusted_signers (CONVERGE_TRUSTED_SIGNERS, comma-separated) of the process that "
            "records the policy of a new namespace"
        )

    def enroll(self, identity: Identity) -> None:
        """Sign the events acting for ``identity``'s agent with its key."""
        self.ring.add_identity(identity)

    def verifier(self) -> SignatureVerifier | None:
        """Return a new verifier of the rule in force (``None`` when ``verify`` is off)."""
        if not self.verify:
            return None
        verifier = SignatureVerifier(require=self.require, trusted=self.trusted)
        self.verifiers.append(verifier)
        return verifier

    def summary(self) -> dict[str, object]:
        """Return the rule in force and the rejections of every verifier handed out."""
        by_reason: dict[str, int] = {}
        recent: list[dict[str, object]] = []
        for verifier in self.verifiers:
            for reason, count in verifier.rejections.items():
                by_reason[reason] = by_reason.get(reason, 0) + count
            recent.extend(r.to_dict() for r in verifier.recent)
        return {
            "verify": self.verify,
            "require_signatures": self.require,
            "policy_recorded": self.policy is not None,
            "trusted_signers": sorted(self.trusted),
            "rejected": sum(by_reason.values()),
            "rejected_by_reason": by_reason,
            "recent_rejections": recent[-20:],
        }
