"""PoolProjection: the events of stream ``pools`` folded into :class:`~converge.core.Pool`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from converge.core.pool import Pool
from converge.errors import DecodeError, InvalidStateError
from events import AgentJoinedPool, AgentLeftPool, PoolCreated, RecordedEvent, subject
from projections.base import Projection

__all__ = ["POOLS_STREAM", "PoolProjection"]

POOLS_STREAM = "pools"
"""Stream kind of pool events; one subject per pool: ``pools.<pool_id>``."""


class PoolProjection(Projection):
    """Every pool by id (policies in their recorded form) and its subject's last sequence.

    ``pool.created`` adds a pool (a second creation of an id is skipped),
    ``pool.agent_joined`` / ``pool.agent_left`` change its members. The objects in
    :attr:`pools` belong to the projection: read, do not mutate. ``resolve_policies``
    (given by the application layer, which knows the policy registries) turns a new
    pool's recorded policies into policy objects in place.
    """

    name: ClassVar[str] = "pools"
    streams: ClassVar[tuple[str, ...]] = (POOLS_STREAM,)

    def __init__(self, resolve_policies: Callable[[Pool], None] | None = None) -> None:
        self.pools: dict[str, Pool] = {}
        self._resolve = resolve_policies
        super().__init__()

    def _new_pool(self, data: Mapping[str, Any]) -> Pool:
        pool = Pool.from_dict(data)
        if self._resolve is not None:
            self._resolve(pool)
        return pool

    def get(self, pool_id: str) -> Pool | None:
        """Return the pool, or ``None``."""
        return self.pools.get(pool_id)

    def pool_version(self, pool_id: str) -> int:
        """Return the last sequence of the pool's subject (0 when unknown)."""
        return self.versions.get(subject(POOLS_STREAM, pool_id), 0)

    def pools_for_agent(self, agent_id: str) -> list[str]:
        """Return the ids of the pools ``agent_id`` belongs to, in creation order."""
        return [pool.id for pool in self.pools.values() if agent_id in pool.agents]

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, PoolCreated):
            pool = self._new_pool(event.pool)
            if pool.id in self.pools:
                raise InvalidStateError(f"pool {pool.id!r} was already created")
            self.pools[pool.id] = pool
        elif isinstance(event, AgentJoinedPool):
            self._pool(event.pool_id).add_agent(event.agent_id)
        elif isinstance(event, AgentLeftPool):
            self._pool(event.pool_id).remove_agent(event.agent_id)
        else:
            raise DecodeError(f"{event.type} is not a pool event")

    def _pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise InvalidStateError(f"unknown pool {pool_id!r}")
        return pool

    def clear(self) -> None:
        self.pools = {}

    def snapshot_state(self) -> dict[str, Any]:
        return {"pools": [pool.to_dict() for pool in self.pools.values()]}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        pools = [self._new_pool(item) for item in state["pools"]]
        self.pools = {pool.id: pool for pool in pools}
