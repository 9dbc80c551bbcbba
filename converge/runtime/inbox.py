"""The inbox between a runtime's receive task and its loop."""

from __future__ import annotations

import asyncio
import collections
import logging

from converge.core.message import Message
from converge.errors import ConfigError, ConvergeTimeoutError
from converge.observability.otel import watch_inbox

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_RUNTIME_INBOX_SIZE", "Inbox"]

DEFAULT_BATCH_SIZE = 10
"""How many items :meth:`Inbox.poll` takes when no ``batch_size`` is given."""

DEFAULT_RUNTIME_INBOX_SIZE = 10_000
"""Bound of the inbox an ``AgentRuntime`` builds when given none (or no ``maxsize``).

When it is full the runtime's receive task waits for room (so a slow agent slows its
transport down) for up to 30 s; after that the message is dropped, logged and counted
in ``Inbox.dropped``. Pass ``inbox_kwargs={"drop_when_full": True}`` to drop at once
instead, or ``{"maxsize": None}`` for no bound."""

logger = logging.getLogger(__name__)


class Inbox:
    """A FIFO of received messages between the receive task and the loop.

    ``maxsize=None`` is unbounded (the runtime's own inbox is bounded by default, see
    :data:`DEFAULT_RUNTIME_INBOX_SIZE`). When full, :meth:`push` drops the new message
    and returns False if ``drop_when_full``, else waits (up to its ``timeout``) for room.
    """

    def __init__(self, maxsize: int | None = None, *, drop_when_full: bool = False) -> None:
        if maxsize is not None and (isinstance(maxsize, bool) or maxsize < 1):
            raise ConfigError(f"Inbox maxsize must be >= 1 or None, got {maxsize!r}")
        self.maxsize = maxsize
        self.drop_when_full = drop_when_full
        self._items: collections.deque[Message] = collections.deque()
        self._room = asyncio.Event()
        self._room.set()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.pushed = 0
        watch_inbox(self)  # the converge.inbox.depth gauge

    def __len__(self) -> int:
        return len(self._items)

    @property
    def is_full(self) -> bool:
        """Whether the inbox holds ``maxsize`` messages."""
        return self.maxsize is not None and len(self._items) >= self.maxsize

    async def push(self, message: Message, *, timeout: float | None = 30.0) -> bool:  # noqa: ASYNC109
        """Add ``message``; return False when it was dropped because the inbox is full.

        The runtime pushes ``Message`` objects; other items are queued as given.

        Raises ``ConvergeTimeoutError`` when waiting for room takes over ``timeout``
        seconds (only without ``drop_when_full``).
        """
        while self.is_full:
            if self.drop_when_full:
                self.dropped += 1
                logger.warning(
                    "inbox full (%s messages): dropped message %s",
                    self.maxsize,
                    getattr(message, "id", message),
                )
                return False
            self._room.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._room.wait()
            except TimeoutError:
                raise ConvergeTimeoutError(
                    f"inbox stayed full ({self.maxsize} messages) for {timeout}s"
                ) from None
        self._items.append(message)
        self.pushed += 1
        self._ready.set()
        return True

    def poll(self, batch_size: int | None = DEFAULT_BATCH_SIZE) -> list[Message]:
        """Remove and return up to ``batch_size`` messages (all when None), oldest first.

        The default takes at most ``DEFAULT_BATCH_SIZE`` (10), as in the seed design.
        """
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or None, got {batch_size!r}")
        count = len(self._items) if batch_size is None else min(batch_size, len(self._items))
        out = [self._items.popleft() for _ in range(count)]
        if out:
            self._room.set()
        if not self._items:
            self._ready.clear()
        return out

    async def wait_not_empty(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for a message; return whether one is there."""
        if self._items:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return bool(self._items)
