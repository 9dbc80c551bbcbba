"""Read-only views over projection state that keep the seed design's attribute forms."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

__all__ = ["CallableMapping"]

V = TypeVar("V")


class CallableMapping(Mapping[str, V]):
    """A live, read-only ``id -> item`` mapping that returns its items as a list when called.

    ``manager.tasks`` reads like the seed's dict (``task_id in manager.tasks``,
    ``manager.tasks[task_id]``) and ``manager.tasks()`` returns the items in order.
    """

    __slots__ = ("_source",)

    def __init__(self, source: Callable[[], Mapping[str, V]]) -> None:
        self._source = source

    def __getitem__(self, key: str) -> V:
        return self._source()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._source()))

    def __len__(self) -> int:
        return len(self._source())

    def __contains__(self, key: object) -> bool:
        return key in self._source()

    def __call__(self) -> list[V]:
        """Return the items, in insertion order."""
        return list(self._source().values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self._source())!r})"
