"""Snapshots of a projection in a ``Store``: written every N applied events, read on start."""

from __future__ import annotations

import logging

import orjson

from converge.core.store import AsyncStore, Store, as_async_store
from converge.errors import DecodeError
from projections.base import Projection

__all__ = ["SnapshotKeeper"]

logger = logging.getLogger(__name__)


class SnapshotKeeper:
    """Keep ``projection``'s snapshots under ``key`` in ``store`` (orjson bytes).

    :attr:`pending` counts events applied since the last snapshot; :meth:`maybe_save`
    writes one when it reaches ``every``. A snapshot holds the namespace and
    :meth:`Projection.snapshot`; an unreadable one is ignored (logged) on restore.
    """

    def __init__(
        self,
        projection: Projection,
        store: Store | AsyncStore | None,
        *,
        key: str,
        namespace: str,
        every: int,
    ) -> None:
        self._projection = projection
        self._store = None if store is None else as_async_store(store)
        self.key = key
        self._namespace = namespace
        self._every = every
        self._saving = False
        self.pending = 0
        """Events applied since the last snapshot."""

    @property
    def enabled(self) -> bool:
        """Whether there is a store to keep snapshots in."""
        return self._store is not None

    async def save(self) -> bool:
        """Write a snapshot now; return ``False`` when there is no store."""
        if self._store is None:
            return False
        data = orjson.dumps(
            {"namespace": self._namespace, "projection": self._projection.snapshot()}
        )
        self.pending = 0
        await self._store.put(self.key, data)
        logger.debug("snapshot %s at %s (%d bytes)", self.key, self._projection.position, len(data))
        return True

    async def maybe_save(self) -> None:
        """Write a snapshot when ``every`` events were applied since the last one."""
        if self._store is None or self.pending < self._every or self._saving:
            return
        self._saving = True
        try:
            await self.save()
        finally:
            self._saving = False

    async def restore(self) -> bool:
        """Load the stored snapshot into the projection; return whether there was one.

        An unreadable snapshot is logged and ignored: the projection stays empty and
        is replayed from the start.
        """
        if self._store is None:
            return False
        raw = await self._store.get(self.key)
        if raw is None:
            return False
        try:
            data = orjson.loads(raw)
            self._projection.restore(data["projection"])
        except (orjson.JSONDecodeError, KeyError, TypeError, DecodeError) as exc:
            logger.warning(
                "ignoring unreadable snapshot %r and replaying from the start: %s", self.key, exc
            )
            self._projection.reset()
            return False
        logger.info("restored snapshot %s at %s", self.key, self._projection.position)
        return True
