"""Tools agents can invoke through ``InvokeTool`` decisions, and their registry."""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

from converge.errors import ConfigError, NotFoundError

__all__ = ["Tool", "ToolRegistry"]


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

    async def invoke(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Run the tool ``name`` with ``params`` and return its result, awaiting if needed.

        Raises ``NotFoundError`` for an unknown tool; the tool's own errors propagate.
        """
        result = self.require(name).run(dict(params or {}))
        if inspect.isawaitable(result):
            result = await result
        return result
