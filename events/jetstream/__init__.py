"""The event log on NATS JetStream.

One stream per kind (``<NS>_TASKS``...), one subject per entity
(``<ns>.<kind>.<id>``). The backend is split by concern:

- :mod:`~events.jetstream.connection`: the nats-py connection and the log's lifecycle;
- :mod:`~events.jetstream.streams` and :mod:`~events.jetstream.admin`: stream specs,
  provisioning, state, deletion;
- :mod:`~events.jetstream.append`: publish, acknowledgement, retry and conflict;
- :mod:`~events.jetstream.read`, :mod:`~events.jetstream.ordered_read` and
  :mod:`~events.jetstream.rawroute`: bounded reads;
- :mod:`~events.jetstream.subscribe`: live subscriptions;
- :mod:`~events.jetstream.jsapi`: JetStream wire helpers;
- :mod:`~events.jetstream.log`: :class:`JetStreamEventLog`, the one object over them.

Only this package (and the NATS transport) imports ``nats``.
"""

from __future__ import annotations

from events.jetstream.admin import StreamStatus
from events.jetstream.log import JetStreamEventLog
from events.jetstream.streams import StreamSettings, StreamSpec

__all__ = ["JetStreamEventLog", "StreamSettings", "StreamSpec", "StreamStatus"]
