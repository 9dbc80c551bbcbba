"""The projection base: a pure fold of recorded events with a per-stream position.

A projection reads one or more streams (by kind, e.g. ``"tasks"``). Its
:meth:`Projection.apply` folds one :class:`~events.RecordedEvent` into the state and
moves the position of that event's stream; an event at or below the position is a
no-op, so an event delivered twice (append acknowledgement, then subscription) is
applied once. ``apply`` does no I/O: a :class:`~projections.runner.ProjectionRunner`
feeds it from an event log, in stream order, and fills gaps.

Besides its state, every projection tracks the last sequence of each subject it has
seen (:attr:`Projection.versions`): the ``expected_version`` a command passes to
``EventLog.append`` for optimistic concurrency on one entity.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from converge.errors import ConvergeError, DecodeError
from events import RecordedEvent

__all__ = ["Projection", "SkippedEvent"]

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
"""Version of the dict layout :meth:`Projection.snapshot` returns."""

RECENT_SKIPS = 100
"""How many skipped events a projection keeps in :attr:`Projection.recent_skips`."""


@dataclass(frozen=True, slots=True)
class SkippedEvent:
    """One stored message a projection passed over without folding it.

    ``reason`` says why: it did not fit the state, its signature was rejected, or the
    log could not decode it. Its sequence still counts as read and still moves the
    version of its subject, so the entity stays writable.
    """

    stream: str
    subject: str
    sequence: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        """Return the record as plain data."""
        return {
            "stream": self.stream,
            "subject": self.subject,
            "seq": self.sequence,
            "reason": self.reason,
        }


class Projection(ABC):
    """Fold recorded events into state, once each, in stream order.

    Subclasses set ``name`` (stable, used in snapshot keys) and ``streams`` (the stream
    kinds they read) and implement :meth:`fold`, :meth:`clear`, :meth:`snapshot_state`
    and :meth:`restore_state`. ``fold`` must be deterministic and free of I/O. An event
    that does not fit the state (a claim of an unknown task, a malformed payload) is
    skipped and counted in :attr:`skipped_events`; a ``ConvergeError`` raised by
    ``fold`` is treated that way. Any other exception propagates to the runner.
    """

    name: ClassVar[str] = "projection"
    streams: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.key = self.name
        """Names this instance's snapshots (one auction's projection adds its id)."""
        self.filters: dict[str, str] = {}
        """Per stream, the subject filter this instance reads (none: the whole stream)."""
        self.position: dict[str, int] = dict.fromkeys(self.streams, 0)
        self.versions: dict[str, int] = {}
        self.skipped_events = 0
        self.skipped_by_stream: dict[str, int] = {}
        """Messages passed over without a fold, per stream (misfits, rejected, undecodable)."""
        self.recent_skips: deque[SkippedEvent] = deque(maxlen=RECENT_SKIPS)
        """The last passed-over messages with their subject and sequence."""

    # -- the fold --------------------------------------------------------------

    def apply(self, recorded: RecordedEvent) -> bool:
        """Fold ``recorded`` into the state exactly once; return whether it was applied.

        Returns ``False`` (and changes nothing) for an event of a stream this projection
        does not read or at or below that stream's position. The position moves to the
        event's sequence even when the event does not fit the state (it is skipped).
        """
        stream = recorded.stream
        position = self.position.get(stream)
        if position is None or recorded.sequence <= position:
            return False
        self.position[stream] = recorded.sequence
        self.versions[recorded.subject] = recorded.sequence
        try:
            self.fold(recorded)
        except ConvergeError as exc:
            self.skipped_events += 1
            self._record_skip(recorded.stream, recorded.subject, recorded.sequence, str(exc))
            logger.warning(
                "%s skipped %s event %s at %s seq %d: %s",
                type(self).__name__,
                recorded.event.type,
                recorded.event.id,
                recorded.subject,
                recorded.sequence,
                exc,
            )
        return True

    def pass_over(self, stream: str, subject: str, sequence: int, reason: str) -> None:
        """Count a message of ``subject`` that is not folded (rejected or undecodable).

        Its sequence moves the subject's version (the log's last sequence of that
        subject is now ``sequence``, so a command must expect it) and, when it is the
        next one, the stream's position. Recorded in :attr:`recent_skips`.
        """
        if stream not in self.position:
            return
        if sequence > self.versions.get(subject, 0):
            self.versions[subject] = sequence
        self.advance(stream, sequence)
        self._record_skip(stream, subject, sequence, reason)

    def _record_skip(self, stream: str, subject: str, sequence: int, reason: str) -> None:
        self.skipped_by_stream[stream] = self.skipped_by_stream.get(stream, 0) + 1
        self.recent_skips.append(SkippedEvent(stream, subject, sequence, reason))

    def advance(self, stream: str, sequence: int) -> None:
        """Move ``stream``'s position up to ``sequence`` (for sequences known to be empty)."""
        if stream in self.position and sequence > self.position[stream]:
            self.position[stream] = sequence

    def version(self, subject: str) -> int:
        """Return the last sequence seen on ``subject`` (0 when none): its expected version."""
        return self.versions.get(subject, 0)

    @property
    def is_empty(self) -> bool:
        """Whether no event was applied yet (every position is 0)."""
        return not any(self.position.values())

    def reset(self) -> None:
        """Forget every applied event: empty state, positions back to 0."""
        self.position = dict.fromkeys(self.streams, 0)
        self.versions = {}
        self.skipped_events = 0
        self.skipped_by_stream = {}
        self.recent_skips.clear()
        self.clear()

    # -- snapshots -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Return the state and positions as JSON-able plain data."""
        return {
            "format": SNAPSHOT_FORMAT,
            "projection": self.name,
            "position": dict(self.position),
            "versions": dict(self.versions),
            "skipped_events": self.skipped_events,
            "skipped_by_stream": dict(self.skipped_by_stream),
            "recent_skips": [skip.to_dict() for skip in self.recent_skips],
            "state": self.snapshot_state(),
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Replace the state and positions with a :meth:`snapshot`.

        Raises ``DecodeError`` naming the problem when ``data`` is not a snapshot of this
        projection; the projection is then left empty.
        """
        self.reset()
        try:
            self._restore(data)
        except (KeyError, TypeError, ValueError) as exc:
            self.reset()
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"{self.name} snapshot is malformed: {exc!r}") from exc

    def _restore(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise DecodeError(f"{self.name} snapshot must be a dict, got {type(data).__name__}")
        if data.get("format") != SNAPSHOT_FORMAT:
            raise DecodeError(
                f"{self.name} snapshot has format {data.get('format')!r}; "
                f"this release reads format {SNAPSHOT_FORMAT}"
            )
        if data.get("projection") != self.name:
            raise DecodeError(
                f"snapshot is of projection {data.get('projection')!r}, not {self.name!r}"
            )
        position = data["position"]
        for stream in self.streams:
            value = position.get(stream, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DecodeError(f"{self.name} snapshot position of {stream!r} is {value!r}")
            self.position[stream] = value
        self.versions = {str(k): int(v) for k, v in data["versions"].items()}
        self.skipped_events = int(data.get("skipped_events", 0))
        self.skipped_by_stream = {
            str(k): int(v) for k, v in data.get("skipped_by_stream", {}).items()
        }
        for item in data.get("recent_skips", ()):
            self.recent_skips.append(
                SkippedEvent(
                    str(item["stream"]), str(item["subject"]), int(item["seq"]), str(item["reason"])
                )
            )
        self.restore_state(data["state"])

    # -- subclass hooks --------------------------------------------------------

    @abstractmethod
    def fold(self, recorded: RecordedEvent) -> None:
        """Update the state with one event (no I/O; raise ``ConvergeError`` to skip it)."""

    @abstractmethod
    def clear(self) -> None:
        """Empty the state."""

    @abstractmethod
    def snapshot_state(self) -> dict[str, Any]:
        """Return the state as JSON-able plain data."""

    @abstractmethod
    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Load the state from :meth:`snapshot_state` output."""
