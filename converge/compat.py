"""Every calling convention kept for the seed design, in one place.

The main classes take one clear type per argument; the seed's looser forms are
translated here, once, and nowhere else:

* :func:`resolve_event_log`: a ``Store`` where an ``EventLog`` is expected
  (``TaskManager(store)``, ``PoolManager(store=store)``) means "keep the events in that
  store" (a :class:`~events.StoreEventLog`): every manager on the store, in this
  process or another one sharing it (a ``FileStore`` directory, a NATS KV bucket),
  shares the state, and a restart finds it again.
"""

from __future__ import annotations

import contextlib

from converge.core.store import AsyncStore, Store
from converge.errors import ConfigError
from events import EventLog, StoreEventLog

__all__ = ["resolve_event_log", "store_event_log"]

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
