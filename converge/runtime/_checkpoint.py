"""The runtime's checkpoints: save its counters now and then, read them back at start."""

from __future__ import annotations

import time
from typing import Any

import orjson

from converge.errors import ConvergeError
from converge.runtime._state import RuntimeParts, logger

__all__ = ["CheckpointPart"]


class CheckpointPart(RuntimeParts):
    """Save and load the runtime's checkpoint in ``checkpoint_store``."""

    @property
    def checkpoint_key(self) -> str:
        """Key of this agent's checkpoint in ``checkpoint_store``."""
        return f"runtime/{self.agent.id}/checkpoint"

    def _checkpoint(self, *, force: bool = False) -> None:
        store = self.checkpoint_store
        if store is None:
            return
        now = time.time()
        if not force and now - self._last_checkpoint < self.checkpoint_interval_sec:
            return
        self._last_checkpoint = now
        data = {
            "agent_id": self.agent.id,
            "state": self.agent.state.value,
            "saved_at": now,
            "stats": self.stats.as_dict(),
            "inbox_size": len(self.inbox),
        }
        try:
            store.put(self.checkpoint_key, orjson.dumps(data))
            self.stats.checkpoints += 1
        except (ConvergeError, OSError) as exc:
            logger.warning("agent %s: checkpoint failed: %s", self.agent.id, exc)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Return the last checkpoint saved for this agent, or None."""
        if self.checkpoint_store is None:
            return None
        raw = self.checkpoint_store.get(self.checkpoint_key)
        if raw is None:
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.warning("agent %s: checkpoint is not JSON; ignored", self.agent.id)
            return None
        return value if isinstance(value, dict) else None

    def _restore_checkpoint(self) -> None:
        data = self.load_checkpoint()
        if data is not None:
            logger.info(
                "agent %s: resuming after checkpoint saved at %s",
                self.agent.id,
                data.get("saved_at"),
            )
        self._last_checkpoint = time.time()
