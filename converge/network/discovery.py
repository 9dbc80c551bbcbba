"""Discovery: agents describe themselves; peers find them by topic, capability and trust.

A registration is an ``AgentRegistered`` event (removal an ``AgentUnregistered``
event) on the agent's subject ``agents.<agent_id>``, and the registrations are the
:class:`~projections.DiscoveryProjection` of the ``agents`` stream, so every process
sees the same agents and follows changes live. Without an event log the events go
to a private in-process log; a seed-style ``store`` then keeps the registrations
(see :class:`converge.compat.SeedDescriptorRecords`) so they survive a restart.
A descriptor's ``public_key`` lets peers verify the agent's messages: put it into an
:class:`~converge.network.identity_registry.IdentityRegistry`.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from converge.compat import SEED_DESCRIPTOR_PREFIX, SeedDescriptorRecords
from converge.core.capability import Capability
from converge.core.descriptor import AgentDescriptor, as_list, coerce_topic
from converge.core.store import AsyncStore, Store
from converge.core.topic import Topic
from converge.errors import ConfigError
from converge.service import Plan, ProjectedService
from events import AgentRegistered, AgentUnregistered, EventLog, subject
from projections.discovery import AGENTS_STREAM, DiscoveryProjection
from projections.verify import SignatureVerifier

__all__ = [
    "DEFAULT_TRUST",
    "STORE_PREFIX",
    "AgentDescriptor",
    "DiscoveryQuery",
    "DiscoveryService",
    "TrustSource",
]

logger = logging.getLogger(__name__)

STORE_PREFIX = SEED_DESCRIPTOR_PREFIX
"""Store key prefix of persisted descriptors (store mode)."""

DEFAULT_TRUST = 0.5
"""Trust of every agent when the service has no trust model."""


class TrustSource(Protocol):
    """Anything with ``get_trust(agent_id) -> float`` (for example ``TrustModel``)."""

    def get_trust(self, agent_id: str) -> float: ...


@dataclass
class DiscoveryQuery:
    """Which agents to find; every given criterion must hold.

    ``topics``: the agent has at least one topic matched by one of these (a query
    topic matches an agent topic with its namespace and at least its attributes).
    ``capabilities``: the agent has all of these (names or Capability objects).
    ``trust_threshold``: the agent's trust is at least this (0..1). ``limit``: at most
    this many results, in registration order.
    """

    topics: list[Topic] | None = None
    capabilities: list[str] | None = None
    trust_threshold: float = 0.0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.topics is not None:
            self.topics = [coerce_topic(t) for t in as_list(self.topics, "DiscoveryQuery.topics")]
        if self.capabilities is not None:
            self.capabilities = [
                c.name if isinstance(c, Capability) else c
                for c in as_list(self.capabilities, "DiscoveryQuery.capabilities")
            ]
            for name in self.capabilities:
                if not isinstance(name, str) or not name:
                    raise ConfigError(f"capability names must be non-empty str, got {name!r}")
        if not 0.0 <= self.trust_threshold <= 1.0:
            raise ConfigError(f"trust_threshold must be in [0, 1], got {self.trust_threshold}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {self.limit}")

    @property
    def min_trust(self) -> float:
        """Alias of ``trust_threshold``."""
        return self.trust_threshold

    def matches(self, descriptor: AgentDescriptor, trust: float = DEFAULT_TRUST) -> bool:
        """Whether ``descriptor`` (whose agent has ``trust``) satisfies this query."""
        if self.topics and not any(
            q.matches(t) or q == t for q in self.topics for t in descriptor.topics
        ):
            return False
        if self.capabilities and not set(self.capabilities) <= set(descriptor.capability_names):
            return False
        return not (self.trust_threshold > 0 and trust < self.trust_threshold)


class DiscoveryService(ProjectedService[DiscoveryProjection]):
    """Register, unregister and find agents (see the module docstring for storage).

    ``trust_model`` (anything with ``get_trust``) answers queries with a
    ``trust_threshold``; without one every agent has trust :data:`DEFAULT_TRUST`.
    ``register``/``unregister`` start the service when needed. Reads (``query``,
    ``get``, ``list``) are plain and see this process's writes at once; call
    :meth:`sync` to see other processes' writes up to now. ``store`` is used only
    without an event log; a synchronous ``Store`` is read at construction already.
    ``snapshot_store`` and ``verifier`` work as for ``TaskManager``.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        store: Store | AsyncStore | None = None,
        trust_model: TrustSource | None = None,
        actor: str | None = None,
        sync_timeout_sec: float = 10.0,
        snapshot_store: Store | AsyncStore | None = None,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        super().__init__(
            DiscoveryProjection(),
            event_log,
            snapshot_store=snapshot_store,
            sync_timeout_sec=sync_timeout_sec,
            verifier=verifier,
        )
        self.store = store
        self.trust_model = trust_model
        self.actor = actor
        self.sync_timeout_sec = sync_timeout_sec
        self._records = (
            None if event_log is not None or store is None else SeedDescriptorRecords(store)
        )
        self._loaded = False
        if self._records is not None and isinstance(store, Store):
            self.projection.preload(self._records.load_now())
            self._loaded = True

    async def start(self) -> None:
        """Load the registrations (the log's, or the store's) and follow the log.

        Idempotent. Raises what the event log or the store raises.
        """
        if self._records is not None and not self._loaded:
            self.projection.preload(await self._records.load())
            self._loaded = True
        await super().start()

    # -- commands --------------------------------------------------------------

    async def register(self, descriptor: AgentDescriptor) -> None:
        """Register (or replace) ``descriptor``; return once it is stored."""
        if not isinstance(descriptor, AgentDescriptor):
            raise ConfigError(
                f"register() expects an AgentDescriptor, got {type(descriptor).__name__}"
            )
        data = descriptor.to_dict()

        def plan() -> Plan[None]:
            event = AgentRegistered(descriptor=data, actor=self.actor or descriptor.id)
            return (event,), None

        await self._execute(_subject(descriptor.id), plan, what=f"registration of {descriptor.id}")
        if self._records is not None:
            await self._records.put(descriptor)

    async def unregister(self, agent_id: str) -> None:
        """Remove ``agent_id``'s registration; no-op when it is not registered."""

        def plan() -> Plan[None]:
            if agent_id not in self.projection.descriptors:
                return (), None
            return (AgentUnregistered(agent_id=agent_id, actor=self.actor or agent_id),), None

        await self._execute(_subject(agent_id), plan, what=f"unregistration of {agent_id}")
        if self._records is not None:
            await self._records.delete(agent_id)

    # -- reads -----------------------------------------------------------------

    @property
    def descriptors(self) -> dict[str, AgentDescriptor]:
        """The registered descriptors by agent id (a snapshot of the mapping)."""
        return dict(self.projection.descriptors)

    def get(self, agent_id: str) -> AgentDescriptor | None:
        """Return the registered descriptor of ``agent_id``, or ``None``."""
        return self.projection.descriptors.get(agent_id)

    def list(self) -> builtins.list[AgentDescriptor]:
        """Return every registered descriptor, in registration order."""
        return builtins.list(self.projection.descriptors.values())

    def trust_of(self, agent_id: str) -> float:
        """Return ``agent_id``'s trust (``DEFAULT_TRUST`` without a trust model)."""
        if self.trust_model is None:
            return DEFAULT_TRUST
        return float(self.trust_model.get_trust(agent_id))

    def query(
        self, query: DiscoveryQuery, candidates: Iterable[AgentDescriptor] | None = None
    ) -> builtins.list[AgentDescriptor]:
        """Return the registered agents (or ``candidates``) that satisfy ``query``."""
        pool = self.projection.descriptors.values() if candidates is None else candidates
        results: builtins.list[AgentDescriptor] = []
        for descriptor in pool:
            if query.matches(descriptor, self.trust_of(descriptor.id)):
                results.append(descriptor)
                if query.limit is not None and len(results) >= query.limit:
                    break
        return results


def _subject(agent_id: str) -> str:
    return subject(AGENTS_STREAM, agent_id)
