"""The seed design's ``store`` argument of the managers, mapped onto event logs.

In the seed design, managers built on the same store object saw each other's state.
Here state lives in an event log, so managers given the same store object (and no
event log) share one in-process :class:`~events.MemoryEventLog` tied to that store.
The store itself is not written: for durable or cross-process state pass a real
event log (``JetStreamEventLog``) and, for fast restarts, a ``snapshot_store``.
"""

from __future__ import annotations

import weakref

from converge.core.store import AsyncStore, Store
from converge.errors import ConfigError
from events import EventLog, MemoryEventLog

__all__ = ["resolve_event_log"]

_logs: weakref.WeakKeyDictionary[Store | AsyncStore, MemoryEventLog] = weakref.WeakKeyDictionary()


def _shared_log(store: Store | AsyncStore) -> MemoryEventLog:
    try:
        log = _logs.get(store)
        if log is None:
            log = MemoryEventLog()
            _logs[store] = log
    except TypeError as exc:  # a store class without weak references
        raise ConfigError(
            f"cannot share state through {type(store).__name__}: pass an event_log instead"
        ) from exc
    return log


def resolve_event_log(
    event_log: EventLog | Store | AsyncStore | None,
    store: Store | AsyncStore | None,
    owner: str,
) -> EventLog | None:
    """Return the event log a manager should use, given its ``event_log`` and ``store``.

    A store given as ``event_log`` (the seed's positional form) or as ``store`` maps to
    the in-process log shared by every manager on that store. Raises ``ConfigError``
    when both a store and an event log are given, or for a value of another type.
    """
    if isinstance(event_log, Store | AsyncStore):
        if store is not None and store is not event_log:
            raise ConfigError(f"{owner}: give the store once (positionally or as store=)")
        store, event_log = event_log, None
    if store is None:
        return event_log
    if not isinstance(store, Store | AsyncStore):
        raise ConfigError(f"{owner} store must be a Store, got {type(store).__name__}")
    if event_log is not None:
        raise ConfigError(
            f"{owner}: give an event_log or a store, not both "
            "(use snapshot_store= to keep snapshots next to an event log)"
        )
    return _shared_log(store)
