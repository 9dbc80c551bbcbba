"""Admission policies: who may join a pool.

A pool records its policy by registered name and parameters (:meth:`AdmissionPolicy.to_spec`,
``{"name": ..., "params": {...}}``), so a pool rebuilt from its creation event in
another process enforces the same policy (:func:`admission_policy_from_spec`).
Built-in names: ``"open"``, ``"whitelist"``, ``"token"``, ``"trust"``; add your own
with :func:`register_admission_policy`.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self

from converge.errors import ConfigError
from converge.policy._spec import PolicyRegistry, RecordedPolicy

if TYPE_CHECKING:
    from converge.core.pool import Pool

__all__ = [
    "AdmissionPolicy",
    "OpenAdmission",
    "TokenAdmission",
    "TrustAdmission",
    "WhitelistAdmission",
    "admission_policy_from_spec",
    "register_admission_policy",
    "registered_admission_policies",
]


class AdmissionPolicy(RecordedPolicy, ABC):  # admit() or the older can_admit() is overridden
    """Decide whether an agent may join a pool.

    Subclasses override :meth:`admit` (and :meth:`params` when they take
    parameters) and are registered by name to be recordable. Subclasses written
    against the older ``can_admit(agent_id, pool_context)`` hook keep working:
    :meth:`admit` calls it with ``{"token", "pool", "trust"}``. Policies are pure:
    no I/O, no state changes.
    """

    _kind = "admission policy"
    _register_hint = "register_admission_policy"

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        # Abstract as an ABC would be, yet a subclass may override either hook.
        if cls.admit is AdmissionPolicy.admit and cls.can_admit is AdmissionPolicy.can_admit:
            raise TypeError(
                f"Can't instantiate abstract class {cls.__name__}: override admit() "
                "(or the older can_admit())"
            )
        return super().__new__(cls)

    @classmethod
    def _policy_registry(cls) -> PolicyRegistry[Any]:
        return _registry

    def admit(
        self,
        agent_id: str,
        *,
        pool: Pool | None = None,
        token: str | None = None,
        trust: float | None = None,
    ) -> bool:
        """Return whether ``agent_id`` may join ``pool``.

        ``token`` is the secret the agent presented (if any), ``trust`` its current
        trust score in [0, 1] (if known).
        """
        if type(self).can_admit is not AdmissionPolicy.can_admit:
            context = {"token": token, "pool": pool, "trust": trust}
            return bool(self.can_admit(agent_id, context))
        raise NotImplementedError(f"{type(self).__name__} must override admit()")

    def can_admit(self, agent_id: str, pool_context: Mapping[str, Any] | None = None) -> bool:
        """Return whether ``agent_id`` may join, reading ``token``/``pool``/``trust`` from a dict.

        The older form of :meth:`admit`; the default delegates to it (deny when
        neither is overridden).
        """
        if type(self).admit is AdmissionPolicy.admit:
            return False
        context = pool_context or {}
        token = context.get("token")
        trust = context.get("trust")
        return self.admit(
            agent_id,
            pool=context.get("pool"),
            token=token if isinstance(token, str) else None,
            trust=float(trust) if isinstance(trust, int | float) else None,
        )


_UNSET: Any = object()  # an argument not given (None is a wrong value, not a missing one)


def _names(value: object, what: str) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(f"{what} must be a list of str, got {type(value).__name__}")
    items = list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{what} must hold non-empty str, got {item!r}")
    return frozenset(items)


class OpenAdmission(AdmissionPolicy):
    """Admit every agent."""

    def admit(
        self,
        agent_id: str,
        *,
        pool: Pool | None = None,
        token: str | None = None,
        trust: float | None = None,
    ) -> bool:
        return True


class WhitelistAdmission(AdmissionPolicy):
    """Admit only the agent ids in ``allowed`` (``whitelist=``, the seed's name, also works).

    Raises ``ConfigError`` when ``allowed`` is a single str or holds non-str items, and
    ``TypeError`` (as for a missing argument) when both or neither are given.
    """

    def __init__(
        self, allowed: Iterable[str] = _UNSET, *, whitelist: Iterable[str] = _UNSET
    ) -> None:
        if (allowed is _UNSET) == (whitelist is _UNSET):
            raise TypeError("WhitelistAdmission takes the agent ids once: allowed or whitelist=")
        given = allowed if whitelist is _UNSET else whitelist
        self.allowed = _names(given, "WhitelistAdmission.allowed")

    @property
    def whitelist(self) -> frozenset[str]:
        """The admitted agent ids (the older name of ``allowed``)."""
        return self.allowed

    def admit(
        self,
        agent_id: str,
        *,
        pool: Pool | None = None,
        token: str | None = None,
        trust: float | None = None,
    ) -> bool:
        return agent_id in self.allowed

    def params(self) -> dict[str, Any]:
        return {"allowed": sorted(self.allowed)}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenAdmission(AdmissionPolicy):
    """Admit agents that present one of ``tokens``.

    ``tokens`` is one token or a list; ``required_token`` (the seed's name) one more.
    Only SHA-256 digests are kept and recorded (``params()`` gives ``token_hashes``),
    so the secrets never reach the event log; a rebuilt policy is made from
    ``token_hashes``. Comparison is constant-time. Raises ``ConfigError`` for empty
    or non-str tokens, or when no token is given.
    """

    def __init__(
        self,
        tokens: str | Iterable[str] = (),
        *,
        token_hashes: Iterable[str] = (),
        required_token: str | None = None,
    ) -> None:
        plain = (
            _names([tokens], "TokenAdmission.tokens")
            if isinstance(tokens, str)
            else _names(tokens, "TokenAdmission.tokens")
        )
        if required_token is not None:
            plain |= _names([required_token], "TokenAdmission.required_token")
        hashes = set(_names(token_hashes, "TokenAdmission.token_hashes"))
        for digest in hashes:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(
                    f"TokenAdmission.token_hashes must be lowercase SHA-256 hex, got {digest!r}"
                )
        hashes.update(_digest(t) for t in plain)
        if not hashes:
            raise ConfigError("TokenAdmission needs at least one token")
        self.token_hashes = frozenset(hashes)

    def admit(
        self,
        agent_id: str,
        *,
        pool: Pool | None = None,
        token: str | None = None,
        trust: float | None = None,
    ) -> bool:
        if not isinstance(token, str) or not token:
            return False
        digest = _digest(token)
        found = False
        for known in self.token_hashes:  # no early exit: constant time over the set
            found |= hmac.compare_digest(known, digest)
        return found

    def params(self) -> dict[str, Any]:
        return {"token_hashes": sorted(self.token_hashes)}


class TrustAdmission(AdmissionPolicy):
    """Admit agents whose trust is at least ``min_trust`` (in [0, 1]); unknown trust is refused.

    Raises ``ConfigError`` when ``min_trust`` is not a number in [0, 1].
    """

    def __init__(self, min_trust: float) -> None:
        if isinstance(min_trust, bool) or not isinstance(min_trust, int | float):
            raise ConfigError(f"TrustAdmission.min_trust must be a number, got {min_trust!r}")
        if not 0.0 <= float(min_trust) <= 1.0:
            raise ConfigError(f"TrustAdmission.min_trust must be in [0, 1], got {min_trust!r}")
        self.min_trust = float(min_trust)

    def admit(
        self,
        agent_id: str,
        *,
        pool: Pool | None = None,
        token: str | None = None,
        trust: float | None = None,
    ) -> bool:
        return trust is not None and trust >= self.min_trust

    def params(self) -> dict[str, Any]:
        return {"min_trust": self.min_trust}


_registry: PolicyRegistry[AdmissionPolicy] = PolicyRegistry("admission policy", AdmissionPolicy)
_registry.register("open", OpenAdmission)
_registry.register("whitelist", WhitelistAdmission)
_registry.register("token", TokenAdmission)
_registry.register("trust", TrustAdmission)


def register_admission_policy(name: str, cls: type[AdmissionPolicy]) -> None:
    """Register ``cls`` under ``name`` so pools can record and rebuild it.

    The class must accept its :meth:`AdmissionPolicy.params` as keyword arguments.
    Every process that rebuilds such pools must register it too. Raises
    ``ConfigError`` for a name taken by another class or a class that is no
    ``AdmissionPolicy``.
    """
    _registry.register(name, cls)


def registered_admission_policies() -> list[str]:
    """Return the registered admission policy names, sorted."""
    return _registry.names()


def admission_policy_from_spec(
    spec: Mapping[str, Any] | str | AdmissionPolicy | None,
) -> AdmissionPolicy:
    """Return the policy a spec describes.

    ``None`` gives :class:`OpenAdmission`; a policy object is returned as is; a name
    or ``{"name": ..., "params": {...}}`` is built from the registry. Raises
    ``ConfigError`` for an unknown name or parameters the policy rejects.
    """
    if spec is None:
        return OpenAdmission()
    if isinstance(spec, AdmissionPolicy):
        return spec
    return _registry.build(spec)
