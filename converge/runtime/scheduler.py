"""The scheduler wakes the runtime loop when there is work, or after a timeout."""

from __future__ import annotations

import asyncio
import math

from converge.errors import ConfigError

__all__ = ["Scheduler"]


class Scheduler:
    """Wake-up signal of one runtime loop.

    :meth:`notify` marks that work arrived (a message, a task); :meth:`wait_for_work`
    returns as soon as it did, or after ``timeout`` seconds. Several notifications
    before one wait collapse into one wake-up.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.notifications = 0

    def notify(self) -> None:
        """Signal that work is available; safe to call from any coroutine or callback."""
        self.notifications += 1
        self._event.set()

    @property
    def has_work(self) -> bool:
        """Whether a notification is pending."""
        return self._event.is_set()

    async def wait_for_work(self, timeout: float | None = 1.0) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for a notification; return whether one came.

        The pending notification is consumed. ``timeout`` must be >= 0 (None waits
        until notified). Raises ``ConfigError`` for a negative or non-finite timeout.
        """
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ConfigError(f"wait_for_work timeout must be a number >= 0, got {timeout!r}")
        if not self._event.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return False
        self._event.clear()
        return True
