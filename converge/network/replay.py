"""Replay protection: a window of seen message ids plus a bound on clock skew."""

from __future__ import annotations

import time
from collections import OrderedDict
from enum import StrEnum

from converge.core.message import Message
from converge.errors import ConfigError

__all__ = ["ReplayGuard", "ReplayVerdict"]

DEFAULT_MAX_SKEW_SEC = 300.0
DEFAULT_WINDOW_SIZE = 100_000


class ReplayVerdict(StrEnum):
    """Outcome of :meth:`ReplayGuard.check`."""

    FRESH = "fresh"
    DUPLICATE = "duplicate"
    TOO_OLD = "too_old"
    FROM_FUTURE = "from_future"


class ReplayGuard:
    """Reject messages seen before or stamped outside ``now ± max_skew_sec``.

    A message is accepted once: its id is remembered for ``max_skew_sec`` (older
    messages fail the timestamp check anyway) and at most ``window_size`` ids are
    kept; when the window is full the oldest ids are forgotten first. Timestamps are
    wall-clock Unix seconds, so senders' clocks must agree within ``max_skew_sec``.
    Record only messages whose signature was verified, so forgeries cannot fill it.
    """

    def __init__(
        self,
        *,
        max_skew_sec: float = DEFAULT_MAX_SKEW_SEC,
        window_size: int = DEFAULT_WINDOW_SIZE,
    ) -> None:
        if max_skew_sec <= 0:
            raise ConfigError(f"max_skew_sec must be > 0 seconds, got {max_skew_sec}")
        if window_size < 1:
            raise ConfigError(f"replay window_size must be >= 1, got {window_size}")
        self.max_skew_sec = float(max_skew_sec)
        self.window_size = int(window_size)
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> expiry (wall clock)

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, message: Message, *, now: float | None = None) -> ReplayVerdict:
        """Classify ``message`` without recording it."""
        now = time.time() if now is None else now
        self._expire(now)
        if message.timestamp < now - self.max_skew_sec:
            return ReplayVerdict.TOO_OLD
        if message.timestamp > now + self.max_skew_sec:
            return ReplayVerdict.FROM_FUTURE
        if message.id in self._seen:
            return ReplayVerdict.DUPLICATE
        return ReplayVerdict.FRESH

    def record(self, message: Message, *, now: float | None = None) -> None:
        """Remember ``message.id`` until its timestamp leaves the skew window."""
        now = time.time() if now is None else now
        self._seen[message.id] = max(message.timestamp, now) + self.max_skew_sec
        self._seen.move_to_end(message.id)
        while len(self._seen) > self.window_size:
            self._seen.popitem(last=False)

    def accept(self, message: Message, *, now: float | None = None) -> ReplayVerdict:
        """Check ``message`` and record it when fresh; return the verdict."""
        now = time.time() if now is None else now
        verdict = self.check(message, now=now)
        if verdict is ReplayVerdict.FRESH:
            self.record(message, now=now)
        return verdict

    def _expire(self, now: float) -> None:
        # Ids are mostly inserted in time order; stop at the first unexpired one.
        while self._seen:
            first_id, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[first_id]
