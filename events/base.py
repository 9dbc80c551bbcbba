"""The event envelope every converge event shares.

An event is an immutable fact: a frozen pydantic model whose class names its
stable ``type`` (dotted, e.g. ``"task.claimed"``) and schema ``version``. The
envelope fields (:attr:`Event.id`, :attr:`Event.occurred_at`, :attr:`Event.actor`,
:attr:`Event.correlation_id`, :attr:`Event.causation_id`) are common to all
events; subclasses add their payload fields.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ENVELOPE_FIELDS", "Event"]

ENVELOPE_FIELDS: frozenset[str] = frozenset(
    {"id", "occurred_at", "actor", "correlation_id", "causation_id"}
)


def _new_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex, at a quarter of its cost
    return os.urandom(16).hex()


class Event(BaseModel):
    """Base of every event: an immutable, versioned fact with an envelope.

    ``id`` is unique per event and is sent as ``Nats-Msg-Id``, so a retried
    append of the same event is stored once. ``occurred_at`` is wall-clock Unix
    seconds. Subclasses set the class variables ``type`` and ``version``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ClassVar[str] = ""
    version: ClassVar[int] = 1

    id: str = Field(default_factory=_new_id, min_length=1)
    occurred_at: float = Field(default_factory=time.time)
    actor: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None

    def payload(self) -> dict[str, Any]:
        """Return the payload fields (everything but the envelope) as plain data."""
        return self.model_dump(exclude=set(ENVELOPE_FIELDS))

    def caused(self, cause: Event) -> Event:
        """Return a copy whose correlation and causation ids follow from ``cause``.

        The correlation id is inherited (or started at the cause's id); the
        causation id is the cause's id.
        """
        return self.model_copy(
            update={
                "correlation_id": cause.correlation_id or cause.id,
                "causation_id": cause.id,
            }
        )
