"""Plumbing shared by the commands: config loading, exit codes and argument parsing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
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
    "set_log_format",
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
    from converge.observability.logging import configure_logging

    log_format = _log_format_override or cfg.log_format
    # A full disk or a lost broker fails every append and reconnect alike: one line of
    # each cause per 10 s, with a count of the ones held back.
    configure_logging(cfg.log_level, json=log_format == "json", collapse_repeats_sec=10.0)
    from converge.observability.otel import configure_tracing

    try:
        configure_tracing("converge")  # from OTEL_TRACES_EXPORTER etc.; off when unset
    except ConfigError as exc:
        usage_error(str(exc))
    return cfg


def with_metrics(
    host: str, port: int | None, work: Coroutine[Any, Any, T]
) -> Callable[[], Coroutine[Any, Any, T]]:
    """Return ``work`` to :func:`execute`, behind a ``/metrics`` endpoint when ``port`` is set."""

    async def run() -> T:
        if port is None:
            return await work
        from converge.observability.otel import serve_metrics

        try:
            async with serve_metrics(host, port) as server:
                typer.echo(f"metrics at {server.url}", err=True)
                return await work
        finally:
            work.close()  # never awaited when the endpoint failed to start

    return run


_log_format_override: str | None = None


def set_log_format(value: str | None) -> None:
    """Use ``value`` (``json`` or ``text``) over the configured log format, or clear it."""
    global _log_format_override
    _log_format_override = value


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
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_as_of(value: str | None, seq: int | None = None) -> int | float | None:
    """Return the bound of ``--as-of`` (a time) or ``--as-of-seq`` (a sequence).

    ``--as-of`` takes ISO-8601 (UTC when naive) or ``@<unix seconds>``; a bare number
    is refused as ambiguous. A bad value, a time in the future or both options exit 2.
    """
    if value is not None and seq is not None:
        usage_error("give --as-of (a time) or --as-of-seq (a sequence), not both")
    if seq is not None:
        if seq < 0:
            usage_error(f"--as-of-seq must be a stream sequence >= 0, got {seq}")
        return seq
    if value is None:
        return None
    text = value.strip()
    if text.startswith("@"):
        try:
            when = float(text[1:])
        except ValueError:
            usage_error(f"--as-of {value!r}: after '@' give Unix seconds, e.g. @1767225600")
        if when != when or when in (float("inf"), float("-inf")) or when < 0:
            usage_error(f"--as-of {value!r} is not a valid Unix time")
    else:
        if text.lstrip("-").replace(".", "", 1).isdigit():
            usage_error(
                f"--as-of {value!r} is ambiguous: use --as-of-seq {text} for a sequence "
                f"or --as-of @{text} for Unix seconds"
            )
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            usage_error(f"--as-of {value!r} is not an ISO-8601 time or @<unix seconds>")
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        when = parsed.timestamp()
    if when > time.time() + 1.0:
        usage_error(f"--as-of {value!r} is in the future")
    return when


def check_kind(kind: str) -> None:
    """Exit with a usage error unless ``kind`` names a stream kind."""
    from events.subjects import validate_kind

    try:
        validate_kind(kind)
    except ConfigError as exc:
        usage_error(one_line(exc))
