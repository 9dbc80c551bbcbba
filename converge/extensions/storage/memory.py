"""An in-process :class:`~converge.core.store.Store` backed by a dict."""

from __future__ import annotations

import builtins
from typing import Any, ClassVar

from converge.core.store import Store, check_key, check_prefix, check_value, decode_value

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keep values in a dict; lost when the process ends.

    Not shared between processes. Operations are atomic because they never yield.
    """

    atomic_put_if_absent: ClassVar[bool] = True

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def put(self, key: str, value: object) -> None:
        key = check_key(key)
        self._data[key] = check_value(value, key)

    def get(self, key: str) -> Any:
        key = check_key(key)
        data = self._data.get(key)
        return None if data is None else decode_value(data, key)

    def delete(self, key: str) -> None:
        self._data.pop(check_key(key), None)

    def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = check_prefix(prefix)
        return sorted(k for k in self._data if k.startswith(prefix))

    def put_if_absent(self, key: str, value: object) -> bool:
        key = check_key(key)
        data = check_value(value, key)
        if key in self._data:
            return False
        self._data[key] = data
        return True

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._data)})"
