"""Discovery: agents describe themselves; peers find them by topic, capability and trust.

With an event log, a registration is an ``AgentRegistered`` event (removal an
``AgentUnregistered`` event) on the agent's subject ``agents.<agent_id>``, and the
registrations are the :class:`~projections.DiscoveryProjection` of the ``agents``
stream, so every process sees the same agents and follows changes live. Without
an event log, registrations are kept in memory and, when a ``store`` is given,
persisted there (key ``discovery:agent:<agent_id>``, the descriptor's dict, as in
the seed design; records under the older ``discovery.agents.`` prefix are read too) so
they survive a restart. A synchronous ``Store`` is read at construction already.
A descriptor's ``public_key`` lets peers verify the agent's messages:
put it into an :class:`~converge.network.identity_registry.IdentityRegistry`.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from converge.core.capability import Capability
from converge.core.store import AsyncStore, Store, as_async_store
from converge.core.topic import Topic
from converge.errors import ConfigError, DecodeError
from converge.lifecycle import AsyncService

if TYPE_CHECKING:
    from events import EventLog
    from projections import DiscoveryProjection, ProjectionRunner

__all__ = [
    "DEFAULT_TRUST",
    "STORE_PREFIX",
    "AgentDescriptor",
    "DiscoveryQuery",
    "DiscoveryService",
    "TrustSource",
]

logger = logging.getLogger(__name__)

STORE_PREFIX = "discovery:agent:"
"""Store key prefix of persisted descriptors (store mode)."""

_LEGACY_STORE_PREFIX = "discovery.agents."

DEFAULT_TRUST = 0.5
"""Trust of every agent when the service has no trust model."""


class TrustSource(Protocol):
    """Anything with ``get_trust(agent_id) -> float`` (for example ``TrustModel``)."""

    def get_trust(self, agent_id: str) -> float: ...


def _coerce_topic(value: object) -> Topic:
    if isinstance(value, Topic):
        return value
    if isinstance(value, str):
        return Topic(value)
    if isinstance(value, Mapping):
        return Topic.from_dict(value)
    raise DecodeError(f"a topic must be a Topic, a namespace or a dict, got {value!r}")


def _coerce_capability(value: object) -> Capability:
    if isinstance(value, Capability):
        return value
    if isinstance(value, str):
        return Capability(value)
    if isinstance(value, Mapping):
        return Capability.from_dict(value)
    raise DecodeError(f"a capability must be a Capability, a name or a dict, got {value!r}")


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise DecodeError(f"{what} must be a list, got {type(value).__name__}")
    return list(value)


@dataclass
class AgentDescriptor:
    """What an agent tells its peers: id, topics, capabilities, public key, metadata.

    ``topics`` accepts Topic objects, namespaces or dicts; ``capabilities`` accepts
    Capability objects, names or dicts. ``metadata`` is free JSON-able data (for
    example transport addresses). Raises ``DecodeError`` for malformed fields.
    """

    id: str
    topics: list[Topic] = field(default_factory=list)
    capabilities: list[Capability] = field(default_factory=list)
    public_key: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DecodeError(f"AgentDescriptor.id must be a non-empty str, got {self.id!r}")
        self.topics = [_coerce_topic(t) for t in _list(self.topics, "AgentDescriptor.topics")]
        self.capabilities = [
            _coerce_capability(c) for c in _list(self.capabilities, "AgentDescriptor.capabilities")
        ]
        if self.public_key is not None:
            if not isinstance(self.public_key, bytes | bytearray | memoryview):
                kind = type(self.public_key).__name__
                raise DecodeError(f"AgentDescriptor.public_key must be bytes, got {kind}")
            self.public_key = bytes(self.public_key)
        if not isinstance(self.metadata, Mapping):
            raise DecodeError(
                f"AgentDescriptor.metadata must be a dict, got {type(self.metadata).__name__}"
            )
        self.metadata = dict(self.metadata)

    @property
    def capability_names(self) -> list[str]:
        """The names of the capabilities."""
        return [c.name for c in self.capabilities]

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-able plain data (``public_key`` as base64 text, omitted when absent)."""
        data: dict[str, Any] = {
            "id": self.id,
            "topics": [t.to_dict() for t in self.topics],
            "capabilities": [c.to_dict() for c in self.capabilities],
            "metadata": dict(self.metadata),
        }
        if self.public_key is not None:
            data["public_key"] = base64.b64encode(self.public_key).decode()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentDescriptor:
        """Build a descriptor from :meth:`to_dict` output; raise ``DecodeError`` if malformed."""
        if not isinstance(data, Mapping):
            raise DecodeError(f"AgentDescriptor must be a dict, got {type(data).__name__}")
        if "id" not in data:
            raise DecodeError("AgentDescriptor is missing the required field 'id'")
        key = data.get("public_key")
        public_key: bytes | None
        if key is None or key == "":
            public_key = None
        elif isinstance(key, bytes | bytearray):
            public_key = bytes(key)
        elif isinstance(key, str):
            try:
                public_key = base64.b64decode(key.encode("ascii"), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DecodeError(f"AgentDescriptor.public_key is not base64: {key!r}") from exc
        else:
            raise DecodeError(f"AgentDescriptor.public_key must be base64 text, got {key!r}")
        return cls(
            id=data["id"],
            topics=data.get("topics") or [],
            capabilities=data.get("capabilities") or [],
            public_key=public_key,
            metadata=data.get("metadata") or {},
        )


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
            self.topics = [_coerce_topic(t) for t in _list(self.topics, "DiscoveryQuery.topics")]
        if self.capabilities is not None:
            self.capabilities = [
                c.name if isinstance(c, Capability) else c
                for c in _list(self.capabilities, "DiscoveryQuery.capabilities")
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


class DiscoveryService(AsyncService):
    """Register, unregister and find agents (see the module docstring for storage).

    ``trust_model`` (anything with ``get_trust``) answers queries with a
    ``trust_threshold``; without one every agent has trust :data:`DEFAULT_TRUST`.
    ``register``/``unregister`` start the service when needed. Reads (``query``,
    ``get``, ``list``) are plain and see this process's writes at once; call
    :meth:`sync` to see other processes' writes up to now.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        store: Store | AsyncStore | None = None,
        trust_model: TrustSource | None = None,
        actor: str | None = None,
        sync_timeout_sec: float = 10.0,
    ) -> None:
        self.event_log = event_log
        self.store = store
        self.trust_model = trust_model
        self.actor = actor
        self.sync_timeout_sec = sync_timeout_sec
        self._async_store = None if store is None else as_async_store(store)
        self._descriptors: dict[str, AgentDescriptor] = {}
        self._runner: ProjectionRunner[DiscoveryProjection] | None = None
        self._started = False
        if event_log is not None:
            from projections import DiscoveryProjection, ProjectionRunner

            self._runner = ProjectionRunner(DiscoveryProjection(), event_log)
        elif isinstance(store, Store):
            self._load_sync_store(store)

    # -- lifecycle -------------------------------------------------------------

    @property
    def is_started(self) -> bool:
        """Whether registrations are loaded (and, with an event log, followed live)."""
        return self._started

    async def start(self) -> None:
        """Load the registrations: catch up with the ``agents`` stream, or read the store.

        Idempotent. Raises what the event log or the store raises.
        """
        if self._started:
            return
        if self._runner is not None:
            await self._runner.start()
        elif self._async_store is not None:
            await self._load_store()
        self._started = True

    async def stop(self) -> None:
        """Stop following the stream. Idempotent; re-raises a background failure."""
        if not self._started:
            return
        self._started = False
        if self._runner is not None:
            await self._runner.stop()

    async def sync(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Apply every registration stored so far (event-log mode; a no-op otherwise)."""
        await self.start()
        if self._runner is not None:
            await self._runner.sync(self.sync_timeout_sec if timeout is None else timeout)

    async def _load_store(self) -> None:
        assert self._async_store is not None
        for prefix in (_LEGACY_STORE_PREFIX, STORE_PREFIX):
            for key in await self._async_store.list(prefix):
                self._load_record(key, await self._async_store.get(key))

    def _load_sync_store(self, store: Store) -> None:
        for prefix in (_LEGACY_STORE_PREFIX, STORE_PREFIX):
            for key in store.list(prefix):
                self._load_record(key, store.get(key))

    def _load_record(self, key: str, raw: object) -> None:
        if raw is None:
            return
        try:
            data = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
            if not isinstance(data, Mapping):
                raise DecodeError(f"expected a descriptor dict, got {type(data).__name__}")
            descriptor = AgentDescriptor.from_dict(data)
        except (orjson.JSONDecodeError, DecodeError) as exc:
            logger.warning("skipping unreadable discovery record %s: %s", key, exc)
            return
        self._descriptors[descriptor.id] = descriptor

    # -- commands --------------------------------------------------------------

    async def register(self, descriptor: AgentDescriptor) -> None:
        """Register (or replace) ``descriptor``; return once it is stored."""
        if not isinstance(descriptor, AgentDescriptor):
            raise ConfigError(
                f"register() expects an AgentDescriptor, got {type(descriptor).__name__}"
            )
        await self.start()
        data = descriptor.to_dict()
        if self._runner is not None:
            from events import AgentRegistered, subject

            assert self.event_log is not None
            recorded = await self.event_log.append(
                AgentRegistered(descriptor=data, actor=self.actor or descriptor.id),
                subject=subject("agents", descriptor.id),
            )
            await self._runner.apply_ack(recorded)
            return
        if self._async_store is not None:
            await self._async_store.put(STORE_PREFIX + descriptor.id, data)
        self._descriptors[descriptor.id] = AgentDescriptor.from_dict(data)

    async def unregister(self, agent_id: str) -> None:
        """Remove ``agent_id``'s registration; no-op when it is not registered."""
        await self.start()
        if self._runner is not None:
            if agent_id not in self._runner.projection.descriptors:
                return
            from events import AgentUnregistered, subject

            assert self.event_log is not None
            recorded = await self.event_log.append(
                AgentUnregistered(agent_id=agent_id, actor=self.actor or agent_id),
                subject=subject("agents", agent_id),
            )
            await self._runner.apply_ack(recorded)
            return
        if self._async_store is not None:
            await self._async_store.delete(STORE_PREFIX + agent_id)
            await self._async_store.delete(_LEGACY_STORE_PREFIX + agent_id)
        self._descriptors.pop(agent_id, None)

    # -- reads -----------------------------------------------------------------

    def _all(self) -> builtins.list[AgentDescriptor]:
        if self._runner is None:
            return list(self._descriptors.values())
        out: builtins.list[AgentDescriptor] = []
        for data in self._runner.projection.descriptors.values():
            try:
                out.append(AgentDescriptor.from_dict(data))
            except DecodeError as exc:
                logger.warning("skipping malformed registration %s: %s", data.get("id"), exc)
        return out

    @property
    def descriptors(self) -> dict[str, AgentDescriptor]:
        """The registered descriptors by agent id (a snapshot, as ``list()``)."""
        return {d.id: d for d in self._all()}

    def get(self, agent_id: str) -> AgentDescriptor | None:
        """Return the registered descriptor of ``agent_id``, or ``None``."""
        if self._runner is None:
            return self._descriptors.get(agent_id)
        data = self._runner.projection.descriptors.get(agent_id)
        return None if data is None else AgentDescriptor.from_dict(data)

    def list(self) -> builtins.list[AgentDescriptor]:
        """Return every registered descriptor, in registration order."""
        return self._all()

    def trust_of(self, agent_id: str) -> float:
        """Return ``agent_id``'s trust (``DEFAULT_TRUST`` without a trust model)."""
        if self.trust_model is None:
            return DEFAULT_TRUST
        return float(self.trust_model.get_trust(agent_id))

    def query(
        self, query: DiscoveryQuery, candidates: Iterable[AgentDescriptor] | None = None
    ) -> builtins.list[AgentDescriptor]:
        """Return the registered agents (or ``candidates``) that satisfy ``query``."""
        pool = self._all() if candidates is None else builtins.list(candidates)
        results: builtins.list[AgentDescriptor] = []
        for descriptor in pool:
            if query.matches(descriptor, self.trust_of(descriptor.id)):
                results.append(descriptor)
                if query.limit is not None and len(results) >= query.limit:
                    break
        return results
