"""Every calling convention kept for the seed design, in one place.

The main classes take one clear type per argument; the seed's looser forms are
translated here, once, and nowhere else:

* :func:`resolve_event_log`: a ``Store`` where an ``EventLog`` is expected
  (``TaskManager(store)``, ``PoolManager(store=store)``) means "share state with the
  other managers built on that store".
"""

from __future__ import annotations

import weakref

from converge.core.store import AsyncStore, Store
from converge.errors import ConfigError
from events import EventLog, MemoryEventLog

__all__ = ["resolve_event_log", "store_event_log"]

_logs: weakref.WeakKeyDictionary[Store | AsyncStore, EventLog] = weakref.WeakKeyDictionary()


def store_event_log(store: Store | AsyncStore) -> EventLog:
    """Return the event log behind the seed's ``store`` argument: one per store object.

    Managers given the same store object (and no event log) share this log, as in the
    seed design they shared the store. Raises ``ConfigError`` for a store class that
    cannot be weakly referenced.
    """
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
