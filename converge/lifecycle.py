"""The lifecycle every stateful service shares: ``start()``, ``stop()`` and ``async with``."""

from __future__ import annotations

from abc import abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["AsyncService"]


class AsyncService:
    """Give a service with async ``start()``/``stop()`` the ``async with`` form.

    ``async with service:`` awaits ``start()`` on entry and ``stop()`` on exit, also
    when the body raises; errors of ``stop()`` propagate.
    """

    @abstractmethod
    async def start(self) -> None:
        """Make the service usable; return when it is ready."""

    @abstractmethod
    async def stop(self) -> None:
        """Release the service's resources (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
