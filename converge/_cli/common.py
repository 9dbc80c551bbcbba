"""Plumbing shared by the commands: config loading, exit codes and argument parsing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from converge.config import ConvergeConfig, load_config
from converge.errors import ConfigError, ConvergeError

__all__ = [
    "check_kind",
    "execute",
    "fail",
    "one_line",
    "parse_as_of",
    "parse_time",
    "setup",
    "usage_error",
]

T = TypeVar("T")


def usage_error(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def setup(config: Path | None, **overrides: Any) -> ConvergeConfig:
    """Load the configuration (a usage error when invalid) and configure logging."""
    try:
        cfg = load_config(config, **overrides)
    except ConfigError as exc:
        usage_error(str(exc))
    logging.basicConfig(
        level=getattr(logging, cfg.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return cfg


def one_line(exc: BaseException) -> str:
    """Return the first line of ``exc``'s message, or its class name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def execute(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``coro_fn()``; map converge errors to one-line messages and exit codes."""
    try:
        return asyncio.run(coro_fn())
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(code=130) from None
    except ConfigError as exc:
        usage_error(one_line(exc))
    except (ConvergeError, OSError) as exc:
        fail(one_line(exc))


def parse_time(value: str, option: str) -> float:
    """Parse Unix seconds or an ISO-8601 time (UTC when naive) into Unix seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        usage_error(f"{option} {value!r} is neither Unix seconds nor an ISO-8601 time")
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_as_of(value: str | None) -> int | float | None:
    """Parse ``--as-of``: digits are a stream sequence, anything else a time."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    when = parse_time(value, "--as-of")
    return when


def check_kind(kind: str) -> None:
    """Exit with a usage error unless ``kind`` names a stream kind."""
    from events.subjects import validate_kind

    try:
        validate_kind(kind)
    except ConfigError as exc:
        usage_error(one_line(exc))
