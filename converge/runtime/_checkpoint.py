"""The runtime's checkpoints: save its counters now and then, read them back at start."""

from __future__ import annotations

import time

import orjson

from converge.errors import ConvergeError
from converge.runtime._state import RuntimeContext, logger

__all__ = ["CheckpointPart"]


class CheckpointPart:
    """Save and load the runtime's checkpoint in the context's ``checkpoint_store``."""

    def __init__(self, ctx: RuntimeContext, interval_sec: float) -> None:
        self.ctx = ctx
        self.interval_sec = interval_sec
        self._last_checkpoint = 0.0

    @property
    def key(self) -> str:
        """Key of this agent's checkpoint in ``checkpoint_store``."""
        return f"runtime/{self.ctx.agent.id}/checkpoint"

    def save(self, *, force: bool = False) -> None:
        """Save the checkpoint when ``interval_sec`` passed since the last (or ``force``)."""
        ctx = self.ctx
        store = ctx.deps.checkpoint_store
        if store is None:
            return
        now = time.time()
        if not force and now - self._last_checkpoint < self.interval_sec:
            return
        self._last_checkpoint = now
        data = {
            "agent_id": ctx.agent.id,
            "state": ctx.agent.state.value,
            "saved_at": now,
            "stats": ctx.stats.as_dict(),
            "inbox_size": len(ctx.inbox),
        }
        try:
            store.put(self.key, orjson.dumps(data))
            ctx.stats.checkpoints += 1
        except (ConvergeError, OSError) as exc:
            logger.warning("agent %s: checkpoint failed: %s", ctx.agent.id, exc)

    def load(self) -> dict[str, object] | None:
        """Return the last checkpoint saved for this agent, or None."""
        store = self.ctx.deps.checkpoint_store
        if store is None:
            return None
        raw = store.get(self.key)
        if not isinstance(raw, bytes | str):
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.warning("agent %s: checkpoint is not JSON; ignored", self.ctx.agent.id)
            return None
        return value if isinstance(value, dict) else None

    def restore(self) -> None:
        """Log the checkpoint found at start and restart the interval."""
        data = self.load()
        if data is not None:
            logger.info(
                "agent %s: resuming after checkpoint saved at %s",
                self.ctx.agent.id,
                data.get("saved_at"),
            )
        self._last_checkpoint = time.time()
