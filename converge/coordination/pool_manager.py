"""PoolManager: create pools and change their members as events on stream ``pools``.

A pool's creation event records its admission policy and governance by registered
name and parameters (``policy.to_spec()``), so a pool rebuilt from the stream in
another process admits exactly as the creator's did. Joins and leaves are appended
with the pool subject's last sequence as ``expected_version``; queries read a
:class:`~projections.PoolProjection` that follows the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from converge.compat import resolve_event_log
from converge.coordination._views import CallableMapping
from converge.core._codec import check_str
from converge.core.pool import Pool
from converge.core.store import AsyncStore, Store
from converge.errors import ConcurrencyError, ConfigError, DecodeError, InvalidStateError
from converge.policy.admission import AdmissionPolicy, admission_policy_from_spec
from converge.policy.governance import governance_from_spec
from converge.service import Plan, ProjectedService
from events import AgentJoinedPool, AgentLeftPool, EventLog, PoolCreated, subject
from projections import POOLS_STREAM, PoolProjection
from projections.verify import SignatureVerifier

__all__ = ["PoolManager", "TrustSource"]

logger = logging.getLogger(__name__)

_SPEC_KEYS = frozenset(
    {"id", "topics", "agents", "admission_policy", "governance", "trust_model", "trust_threshold"}
)
_SPEC_ALIASES = {"governance_model": "governance"}  # the seed design's key


@runtime_checkable
class TrustSource(Protocol):
    """Anything that scores an agent's trust (``converge.policy.trust.TrustModel``)."""

    def get_trust(self, agent_id: str) -> float:
        """Return ``agent_id``'s trust score."""
        ...


def _check_id(value: object, what: str) -> str:
    return check_str(value, what, allow_empty=False)


def _local_policy(value: object, hook: str) -> object | None:
    """Return ``value`` when it is a policy object that cannot be recorded, else None.

    Such objects (duck-typed with ``hook``, or subclasses that are not registered,
    as the seed design allowed) are enforced by the creating manager only.
    """
    if value is None or isinstance(value, str | Mapping):
        return None
    if not callable(getattr(value, hook, None)):
        return None
    to_spec = getattr(value, "to_spec", None)
    if callable(to_spec):
        try:
            to_spec()
        except ConfigError:
            return value
        return None
    return value


def _local_marker(value: object) -> dict[str, Any]:
    """Return the recorded stand-in of a process-local policy (unbuildable elsewhere)."""
    return {"name": f"local:{type(value).__qualname__}", "params": {}}


def _recorded_policy(value: object, what: str, build: Any) -> object:
    """Return the recorded form (``{"name", "params"}``) of a policy given in a spec."""
    if value is None:
        return None
    policy = build(value)
    to_spec = getattr(policy, "to_spec", None)
    if not callable(to_spec):
        raise ConfigError(f"{what} {type(policy).__name__} has no to_spec(); it cannot be recorded")
    spec = to_spec()
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{what} {type(policy).__name__}.to_spec() must return a dict")
    return dict(spec)


def _resolve_policies(pool: Pool) -> None:
    """Turn a pool's recorded policies into policy objects (kept as recorded when unknown here)."""
    for attr, build in (
        ("admission_policy", admission_policy_from_spec),
        ("governance", governance_from_spec),
    ):
        recorded = getattr(pool, attr)
        if isinstance(recorded, Mapping) and str(recorded.get("name")).startswith("local:"):
            continue  # a process-local policy: only its creator has it
        if isinstance(recorded, Mapping | str):
            try:
                setattr(pool, attr, build(recorded))
            except ConfigError as exc:  # e.g. a class registered only by its creator
                logger.warning("pool %s keeps its recorded %s: %s", pool.id, attr, exc)


class PoolManager(ProjectedService[PoolProjection]):
    """Pools and their members on an event log; the state is a projection of ``pools``.

    ``trust_model`` (anything with ``get_trust(agent_id) -> float``) scores agents for
    admission and the pools' ``trust_threshold``; without one, thresholds are not
    checked. ``event_log=None`` uses a private in-process ``MemoryEventLog``; the seed
    design's ``store`` (positional or ``store=``) keeps the events in that store, so
    managers on it, in any process, share the pools and a restart finds them. Pools
    returned by queries belong to the projection: read them, do not mutate them.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        snapshot_store: Store | AsyncStore | None = None,
        store: Store | AsyncStore | None = None,
        trust_model: TrustSource | None = None,
        snapshot_every: int = 10_000,
        sync_timeout_sec: float = 10.0,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        if trust_model is not None and not isinstance(trust_model, TrustSource):
            raise ConfigError(
                f"trust_model needs get_trust(agent_id), got {type(trust_model).__name__}"
            )
        super().__init__(
            PoolProjection(_resolve_policies),
            resolve_event_log(event_log, store, "PoolManager"),
            snapshot_store=snapshot_store,
            snapshot_every=snapshot_every,
            sync_timeout_sec=sync_timeout_sec,
            verifier=verifier,
        )
        self._trust_model = trust_model
        self._pool_trust: dict[str, TrustSource] = {}
        self._policies: dict[str, tuple[object, AdmissionPolicy]] = {}
        self._local_admission: dict[str, object] = {}
        self._local_governance: dict[str, object] = {}

    # -- queries -------------------------------------------------------------------------

    def get_pool(self, pool_id: str) -> Pool | None:
        """Return the pool, or ``None`` when the projection does not know it."""
        self._refresh()
        return self.projection.pools.get(pool_id)

    @property
    def pools(self) -> CallableMapping[Pool]:
        """Every known pool by id; call it (``pools()``) for a list in creation order."""
        self._refresh()
        return CallableMapping(lambda: self.projection.pools)

    def get_governance(self, pool_id: str) -> object | None:
        """Return the governance model of ``pool_id`` (None when it records none).

        A process-local model (an unregistered object given to this manager's
        ``create_pool``) is returned as given; a recorded one is rebuilt. Raises
        ``ConfigError`` when the recorded model is not registered in this process.
        """
        local = self._local_governance.get(pool_id)
        if local is not None:
            return local
        pool = self.get_pool(pool_id)
        if pool is None or pool.governance is None:
            return None
        recorded = pool.governance
        if not isinstance(recorded, Mapping | str):
            return recorded
        return governance_from_spec(recorded)

    def get_pools_for_agent(self, agent_id: str) -> list[str]:
        """Return the ids of the pools ``agent_id`` is a member of."""
        self._refresh()
        return self.projection.pools_for_agent(agent_id)

    # -- commands ------------------------------------------------------------------------

    async def create_pool(self, spec: Mapping[str, Any]) -> Pool:
        """Create a pool from ``spec`` (keys: the ``Pool`` fields) and return it.

        ``admission_policy`` and ``governance`` may be policy objects, names or
        ``{"name", "params"}`` dicts; they are recorded in their spec form.
        ``trust_model`` may be an object with ``get_trust`` (used by this manager for
        this pool, not recorded) or recorded data. Raises ``ConfigError`` for unknown
        keys or policies, ``DecodeError`` for bad field values, ``InvalidStateError``
        when the id exists.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(f"pool spec must be a dict, got {type(spec).__name__}")
        fields = dict(spec)
        for alias, key in _SPEC_ALIASES.items():
            if alias in fields:
                if key in fields:
                    raise ConfigError(f"pool spec gives both {alias!r} and {key!r}; give one")
                fields[key] = fields.pop(alias)
        unknown = set(fields) - _SPEC_KEYS
        if unknown:
            raise ConfigError(
                f"pool spec has unknown keys {sorted(map(str, unknown))}; "
                f"allowed: {sorted(_SPEC_KEYS)}"
            )
        local_admission = _local_policy(fields.get("admission_policy"), "can_admit")
        if local_admission is None:
            local_admission = _local_policy(fields.get("admission_policy"), "admit")
        local_governance = _local_policy(fields.get("governance"), "resolve_dispute")
        for what, local in (
            ("admission policy", local_admission),
            ("governance", local_governance),
        ):
            if local is not None:
                logger.warning(
                    "pool %s: %s %s is not registered; only this manager enforces it "
                    "(register it so every process rebuilds it)",
                    fields.get("id", "?"),
                    what,
                    type(local).__qualname__,
                )
        fields["admission_policy"] = (
            _local_marker(local_admission)
            if local_admission is not None
            else _recorded_policy(
                fields.get("admission_policy"), "admission_policy", admission_policy_from_spec
            )
        )
        fields["governance"] = (
            _local_marker(local_governance)
            if local_governance is not None
            else _recorded_policy(fields.get("governance"), "governance", governance_from_spec)
        )
        trust_source: TrustSource | None = None
        trust_model = fields.get("trust_model")
        if isinstance(trust_model, TrustSource):
            trust_source = trust_model
            fields["trust_model"] = None
        pool = Pool(**fields)
        record = pool.to_dict()
        await self._ensure_started()
        if pool.id in self.projection.pools:
            raise InvalidStateError(f"pool {pool.id!r} exists already")
        try:
            await self._append(PoolCreated(pool=record), subject(POOLS_STREAM, pool.id), 0)
        except ConcurrencyError as exc:
            raise InvalidStateError(
                f"pool {pool.id!r} exists already (created by another writer)"
            ) from exc
        if trust_source is not None:
            self._pool_trust[pool.id] = trust_source
        if local_admission is not None:
            self._local_admission[pool.id] = local_admission
        if local_governance is not None:
            self._local_governance[pool.id] = local_governance
        created = self.projection.pools.get(pool.id)
        if created is None:  # pragma: no cover - apply_ack applied it
            raise DecodeError(f"pool {pool.id!r} was recorded but could not be projected")
        return created

    async def join_pool(self, agent_id: str, pool_id: str, *, token: str | None = None) -> bool:
        """Add ``agent_id`` to the pool when its admission policy and trust allow it.

        Returns ``False`` for an unknown pool, a refusal by the pool's recorded
        admission policy (given ``token`` and the agent's trust), or a trust below the
        pool's ``trust_threshold``; ``True`` when the agent is (already) a member.
        """
        agent_id = _check_id(agent_id, "agent_id")
        pool_id = _check_id(pool_id, "pool_id")

        async def plan() -> Plan[bool]:
            pool = await self._find(pool_id)
            if pool is None:
                return (), False
            if agent_id in pool.agents:
                return (), True
            if not self._admits(pool, agent_id, token):
                logger.info("pool %s refused agent %s", pool_id, agent_id)
                return (), False
            return (AgentJoinedPool(pool_id=pool_id, agent_id=agent_id, actor=agent_id),), True

        return await self._execute(
            subject(POOLS_STREAM, pool_id), plan, what=f"join of pool {pool_id!r} by {agent_id!r}"
        )

    async def leave_pool(self, agent_id: str, pool_id: str) -> None:
        """Remove ``agent_id`` from the pool; no-op for an unknown pool or a non-member."""
        agent_id = _check_id(agent_id, "agent_id")
        pool_id = _check_id(pool_id, "pool_id")

        async def plan() -> Plan[None]:
            pool = await self._find(pool_id)
            if pool is None or agent_id not in pool.agents:
                return (), None
            return (AgentLeftPool(pool_id=pool_id, agent_id=agent_id, actor=agent_id),), None

        await self._execute(
            subject(POOLS_STREAM, pool_id), plan, what=f"leave of pool {pool_id!r} by {agent_id!r}"
        )

    # -- internals -----------------------------------------------------------------------

    async def _find(self, pool_id: str) -> Pool | None:
        pool = self.projection.pools.get(pool_id)
        if pool is None:
            await self.sync()
            pool = self.projection.pools.get(pool_id)
        return pool

    def _policy(self, pool: Pool) -> AdmissionPolicy:
        cached = self._policies.get(pool.id)
        if cached is not None and cached[0] == pool.admission_policy:
            return cached[1]
        recorded = pool.admission_policy
        if recorded is not None and not isinstance(recorded, Mapping | str | AdmissionPolicy):
            raise ConfigError(f"pool {pool.id!r} has an unreadable admission policy {recorded!r}")
        policy = admission_policy_from_spec(recorded)
        self._policies[pool.id] = (recorded, policy)
        return policy

    def _admits(self, pool: Pool, agent_id: str, token: str | None) -> bool:
        source = self._pool_trust.get(pool.id, self._trust_model)
        trust = None if source is None else float(source.get_trust(agent_id))
        local = self._local_admission.get(pool.id)
        if local is not None:
            context = {"token": token, "pool": pool, "trust": trust}
            can_admit = getattr(local, "can_admit", None)
            if callable(can_admit):
                admitted = bool(can_admit(agent_id, context))
            else:
                admitted = bool(local.admit(agent_id, pool=pool, token=token, trust=trust))  # type: ignore[attr-defined]
            if not admitted:
                return False
        elif not self._policy(pool).admit(agent_id, pool=pool, token=token, trust=trust):
            return False
        return trust is None or trust >= pool.trust_threshold
