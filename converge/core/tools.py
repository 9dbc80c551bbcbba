"""Tools agents can invoke through ``InvokeTool`` decisions, and their registry."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Protocol, runtime_checkable

from converge.errors import ConfigError, ConvergeTimeoutError, NotFoundError

__all__ = ["Tool", "ToolRegistry"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Tool(Protocol):
    """An executable tool: a ``name`` and ``run(params)``, sync or async.

    ``run`` returns plain data (or an awaitable of it) that can go into a task result.
    """

    @property
    def name(self) -> str:
        """Name used in ``InvokeTool.tool_name``."""
        ...

    def run(self, params: dict[str, Any]) -> Any:
        """Run the tool with ``params``; may return an awaitable."""
        ...


class ToolRegistry:
    """Tools by name; registering a name again replaces the earlier tool."""

    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self._abandoned: set[asyncio.Future[Any]] = set()
        for tool in tools or ():
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Register ``tool`` under ``tool.name``.

        Raises ``ConfigError`` when ``tool`` lacks ``name``/``run`` or its name is not a
        non-empty str.
        """
        if not isinstance(tool, Tool):
            raise ConfigError(
                f"{type(tool).__name__} is not a tool: it needs a `name` and a `run(params)`"
            )
        name = tool.name
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tool {type(tool).__name__} has an invalid name {name!r}")
        self._tools[name] = tool

    def unregister(self, name: str) -> None:
        """Remove the tool called ``name``; no-op when absent."""
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool | None:
        """Return the tool called ``name``, or ``None`` when none is registered."""
        return self._tools.get(name)

    def require(self, name: str) -> Tool:
        """Return the tool called ``name``.

        Raises ``NotFoundError`` (a ``KeyError``) naming the tool and the registered names.
        """
        tool = self._tools.get(name)
        if tool is None:
            raise NotFoundError(
                f"no tool named {name!r} is registered; registered: {sorted(self._tools)}"
            )
        return tool

    def list_names(self) -> list[str]:
        """Return the registered tool names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    async def invoke(
        self, name: str, params: dict[str, Any] | None = None, *, timeout_sec: float | None = None
    ) -> Any:
        """Run the tool ``name`` with ``params`` and return its result, awaiting if needed.

        With ``timeout_sec`` the call is cut off after that many seconds with
        ``ConvergeTimeoutError`` and the caller goes on at once: an async tool is
        cancelled (even one that ignores cancellation is not waited for), and a
        synchronous one runs in a worker thread (``asyncio.to_thread``, the one place
        tools get a thread) that is left to finish on its own, since Python cannot stop
        a thread. ``abandoned`` counts calls cut off and still running. Raises
        ``NotFoundError`` for an unknown tool; the tool's own errors propagate.
        """
        tool = self.require(name)
        args = dict(params or {})
        if timeout_sec is None:
            result = tool.run(args)
            return await result if inspect.isawaitable(result) else result
        threaded = not inspect.iscoroutinefunction(tool.run)
        if threaded:
            call: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(tool.run, args))
        else:
            call = asyncio.ensure_future(tool.run(args))
        done, _ = await asyncio.wait({call}, timeout=timeout_sec)
        if call in done:
            result = call.result()
            if not inspect.isawaitable(result):
                return result
            threaded, call = False, asyncio.ensure_future(result)
            done, _ = await asyncio.wait({call}, timeout=timeout_sec)
            if call in done:
                return call.result()
        if not threaded:  # a thread cannot be stopped: its call ends when the tool returns
            call.cancel()
        self._abandoned.add(call)  # kept until it ends, so it is not garbage collected
        call.add_done_callback(self._forget)
        raise ConvergeTimeoutError(f"tool {name!r} did not finish within {timeout_sec}s")

    @property
    def abandoned(self) -> int:
        """Tool calls cut off by their timeout that have not ended yet."""
        return len(self._abandoned)

    async def drain(self, timeout_sec: float = 5.0) -> bool:
        """Wait up to ``timeout_sec`` for cut-off calls to end; return whether they all did."""
        if self._abandoned:
            await asyncio.wait(set(self._abandoned), timeout=timeout_sec)
        return not self._abandoned

    def _forget(self, call: asyncio.Future[Any]) -> None:
        self._abandoned.discard(call)
        if not call.cancelled() and call.exception() is not None:
            logger.warning("a tool call cut off by its timeout failed later: %r", call.exception())
