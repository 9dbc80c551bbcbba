"""Store backends: ``MemoryStore``, ``FileStore`` and ``NatsKVStore`` (JetStream KV).

The contract suite every backend passes is ``converge.extensions.storage.testing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from converge.extensions.storage.file import FileStore
from converge.extensions.storage.memory import MemoryStore

if TYPE_CHECKING:
    from converge.extensions.storage.nats_kv import NatsKVStore

__all__ = ["FileStore", "MemoryStore", "NatsKVStore"]


def __getattr__(name: str) -> Any:
    if name == "NatsKVStore":  # imported on first use: it pulls in nats-py
        from converge.extensions.storage.nats_kv import NatsKVStore

        return NatsKVStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
