"""Every calling convention kept for the seed design, in one place.

The main classes take one clear type per argument; the seed's looser forms are
translated here, once, and nowhere else:

* :func:`resolve_event_log`: a ``Store`` where an ``EventLog`` is expected
  (``TaskManager(store)``, ``PoolManager(store=store)``) means "keep the events in that
  store" (a :class:`~events.StoreEventLog`): every manager on the store, in this
  process or another one sharing it (a ``FileStore`` directory, a NATS KV bucket),
  shares the state, and a restart finds it again.
* :class:`SeedDescriptorRecords`: discovery's registrations kept under the seed's store
  keys (``discovery:agent:<id>``, and an older ``discovery.agents.<id>`` spelling).
* :func:`seed_session_members` and :func:`seed_vote`: ``NegotiationProtocol``'s seed
  forms ``create_session(initiator_id, participants, initial_proposal)`` and
  ``accept/reject(session_id, agent_id)``.
* ``Transport.__new__`` gives every transport its base state before ``__init__``, so a
  seed-style subclass that skips ``super().__init__()`` still counts and verifies.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping

import orjson

from converge.core.descriptor import AgentDescriptor
from converge.core.store import AsyncStore, Store, as_async_store
from converge.errors import ConfigError, DecodeError
from events import EventLog, StoreEventLog

__all__ = [
    "SEED_DESCRIPTOR_PREFIX",
    "SeedDescriptorRecords",
    "resolve_event_log",
    "seed_session_members",
    "seed_vote",
    "store_event_log",
]

logger = logging.getLogger(__name__)

_ATTRIBUTE = "_converge_event_log"


def store_event_log(store: Store | AsyncStore) -> StoreEventLog:
    """Return the event log kept in ``store``: one log object per store object.

    Managers given the same store object share this log object, so they also wake
    each other at once. A store class that refuses attributes (``__slots__``) gives
    each caller its own log object; they still share the history through the store.
    """
    log = getattr(store, _ATTRIBUTE, None)
    if isinstance(log, StoreEventLog):
        return log
    log = StoreEventLog(store)
    with contextlib.suppress(AttributeError):
        setattr(store, _ATTRIBUTE, log)
    return log


def resolve_event_log(
    event_log: object,
    store: object,
    owner: str,
) -> EventLog | None:
    """Return the event log a service uses, given its ``event_log`` and seed ``store``.

    A store given as ``event_log`` (the seed's positional form) or as ``store`` maps to
    :func:`store_event_log`. Raises ``ConfigError`` when both a store and an event log
    are given, or for a value of another type.
    """
    if isinstance(event_log, Store | AsyncStore):
        if store is not None and store is not event_log:
            raise ConfigError(f"{owner}: give the store once (positionally or as store=)")
        store, event_log = event_log, None
    if event_log is not None and not isinstance(event_log, EventLog):
        raise ConfigError(f"{owner}: event_log must be an EventLog, got {type(event_log).__name__}")
    if store is None:
        return event_log
    if not isinstance(store, Store | AsyncStore):
        raise ConfigError(f"{owner} store must be a Store, got {type(store).__name__}")
    if event_log is not None:
        raise ConfigError(
            f"{owner}: give an event_log or a store, not both "
            "(use snapshot_store= to keep snapshots next to an event log)"
        )
    return store_event_log(store)


SEED_DESCRIPTOR_PREFIX = "discovery:agent:"
"""Store key prefix of the seed's discovery records: ``discovery:agent:<agent_id>``."""

_OLDER_DESCRIPTOR_PREFIX = "discovery.agents."  # an earlier spelling, read and deleted only


class SeedDescriptorRecords:
    """The seed's discovery records in a store: one key per agent, the descriptor's dict.

    ``DiscoveryService(store=...)`` without an event log mirrors its registrations
    here so a restart (or another service on the store) finds them. Records under the
    older ``discovery.agents.`` prefix are read too; unreadable records are skipped
    with a warning.
    """

    def __init__(self, store: Store | AsyncStore) -> None:
        self._store = store
        self._async = as_async_store(store)

    def load_now(self) -> list[AgentDescriptor]:
        """Read every record of a synchronous ``Store`` (an async one reads in :meth:`load`)."""
        if not isinstance(self._store, Store):
            return []
        store = self._store
        return self._decode(
            (key, store.get(key))
            for prefix in (_OLDER_DESCRIPTOR_PREFIX, SEED_DESCRIPTOR_PREFIX)
            for key in store.list(prefix)
        )

    async def load(self) -> list[AgentDescriptor]:
        """Read every record."""
        found: list[tuple[str, object]] = []
        for prefix in (_OLDER_DESCRIPTOR_PREFIX, SEED_DESCRIPTOR_PREFIX):
            for key in await self._async.list(prefix):
                found.append((key, await self._async.get(key)))
        return self._decode(found)

    async def put(self, descriptor: AgentDescriptor) -> None:
        """Store ``descriptor``'s record."""
        await self._async.put(SEED_DESCRIPTOR_PREFIX + descriptor.id, descriptor.to_dict())

    async def delete(self, agent_id: str) -> None:
        """Delete ``agent_id``'s records (both spellings)."""
        await self._async.delete(SEED_DESCRIPTOR_PREFIX + agent_id)
        await self._async.delete(_OLDER_DESCRIPTOR_PREFIX + agent_id)

    @staticmethod
    def _decode(records: Iterable[tuple[str, object]]) -> list[AgentDescriptor]:
        out: list[AgentDescriptor] = []
        for key, raw in records:
            if raw is None:
                continue
            try:
                data = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
                if not isinstance(data, Mapping):
                    raise DecodeError(f"expected a descriptor dict, got {type(data).__name__}")
                out.append(AgentDescriptor.from_dict(data))
            except (orjson.JSONDecodeError, DecodeError) as exc:
                logger.warning("skipping unreadable discovery record %s: %s", key, exc)
        return out


def seed_session_members(
    participants: Iterable[str] | str, others: Iterable[str] | None
) -> tuple[str | None, Iterable[str], Iterable[str]]:
    """Read ``NegotiationProtocol.create_session``'s first two arguments.

    The main form is ``create_session(participants)``; the seed's is
    ``create_session(initiator_id, participants, initial_proposal)``. Returns
    ``(initiator or None, first members, other members)``. Raises ``DecodeError`` for a
    single str without others and for participants given twice.
    """
    if isinstance(participants, str):
        if others is None:
            raise DecodeError(
                "participants must be a list of agent ids, not a single str; "
                "or call create_session(initiator_id, participants, initial_proposal)"
            )
        return participants, [participants], others
    if others is not None:
        raise DecodeError(
            "give the participants once: create_session(participants) or "
            "create_session(initiator_id, participants, initial_proposal)"
        )
    return None, participants, ()


def seed_vote(proposal_id: str | None, agent_id: str | None, verb: str) -> tuple[str | None, str]:
    """Read ``accept``/``reject``'s arguments after the session id.

    The main form is ``(session_id, proposal_id or None, agent_id)``; the seed's is
    ``(session_id, agent_id)`` (the current proposal), recognised by a missing third
    argument. Returns ``(proposal_id, agent_id)``. Raises ``DecodeError`` without an
    agent id.
    """
    if agent_id is not None:
        return proposal_id, agent_id
    if proposal_id is None:
        raise DecodeError(f"{verb}() needs the agent's id")
    return None, proposal_id
