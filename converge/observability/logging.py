"""Structured logging: a JSON formatter (orjson), setup for applications, field helpers.

The library never installs handlers; applications (and the CLI) call
:func:`configure_logging`. Structured fields travel as ``extra`` (``agent_id``,
``task_id``, ``stream``, ``seq``, ``trace_id``...) or through :func:`log_struct`;
:class:`JsonFormatter` puts them at the top level of each JSON line.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

from converge.errors import ConfigError

__all__ = ["JsonFormatter", "RepeatFilter", "configure_logging", "get_logger", "log_struct"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "props"}
)
_TEXT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
_MARK = "_converge_handler"


def _jsonable(value: Any) -> Any:
    return repr(value) if not isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object per line.

    Keys: ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``module``, then every ``extra`` field and :func:`log_struct` field, then
    ``exception`` / ``stack`` when present. Values orjson cannot encode are
    written as their ``repr``. The OpenTelemetry ``trace_id``/``span_id`` of the
    current span are added when a span is active and the record has none.
    """

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        validate: bool = True,
        *,
        defaults: Mapping[str, Any] | None = None,
        include_trace: bool = True,
    ) -> None:
        # The standard Formatter arguments (what dictConfig and the seed pass): a JSON
        # line has fixed keys, so ``fmt`` is only validated; ``datefmt`` (a strftime
        # format) replaces ISO 8601 in ``timestamp``.
        super().__init__(fmt, datefmt, style, validate, defaults=defaults)
        self.include_trace = include_trace

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": (
                self.formatTime(record, self.datefmt)
                if self.datefmt
                else datetime.fromtimestamp(record.created, UTC).isoformat()
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "module": record.module,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                data[key] = value
        props = getattr(record, "props", None)
        if isinstance(props, Mapping):
            data.update({str(k): v for k, v in props.items()})
        if self.include_trace and "trace_id" not in data:
            from converge.observability.tracing import get_current_span_id, get_current_trace_id

            trace_id = get_current_trace_id()
            if trace_id is not None:
                data["trace_id"] = trace_id
                data["span_id"] = get_current_span_id()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(data, default=_jsonable, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


def _level(level: int | str) -> int:
    if isinstance(level, bool):
        raise ConfigError(f"log level must be an int or a name such as 'INFO', got {level!r}")
    if isinstance(level, int):
        return level
    if isinstance(level, str):
        value = logging.getLevelName(level.strip().upper())
        if isinstance(value, int):
            return value
    raise ConfigError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")


# Ids, hashes, UUIDs, ports, counts: what differs between records of one cause.
_VARYING = re.compile(r"[0-9A-Fa-f]{8,}(?:-[0-9A-Fa-f]{4,})*|\d+")


class RepeatFilter(logging.Filter):
    """Pass one of each run of similar warnings (and worse) per ``window_sec``.

    Records are similar when their logger, level and message agree once ids, hashes,
    UUIDs and numbers are masked: a full disk refuses every append of every agent, and
    a broker that went away fails every reconnect, each with its own ids. The first
    record of a cause passes; the others within the window are counted, and the next one
    to pass says how many were held back. Records below WARNING always pass.
    """

    def __init__(
        self, window_sec: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_sec = window_sec
        self._clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [passed at, held]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, _VARYING.sub("*", message))
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_sec:
            seen[1] += 1
            return False
        if len(self._seen) >= 1024:  # bounded: forget the causes of long ago
            self._seen.clear()
        self._seen[key] = [now, 0]
        if seen is not None and seen[1]:
            held = int(seen[1])
            record.msg = f"{message} ({held} similar held back since the last one)"
            record.args = None
        return True


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json: bool | None = None,
    json_format: bool | None = None,
    stream: IO[str] | None = None,
    logger_name: str | None = None,
    collapse_repeats_sec: float | None = None,
) -> logging.Handler:
    """Send log records of ``logger_name`` (default: the root logger) to ``stream``.

    ``json=True`` formats them with :class:`JsonFormatter`, otherwise as text
    (``json_format`` is the older name). ``stream`` defaults to ``sys.stderr``.
    Calling it again replaces the handler it installed before, never others. With
    ``collapse_repeats_sec`` the handler passes one of each run of similar warnings per
    that many seconds (:class:`RepeatFilter`). Returns the handler. Raises
    ``ConfigError`` for an unknown level.
    """
    if json is not None and json_format is not None and json != json_format:
        raise ConfigError("give json or its older name json_format, not both")
    as_json = bool(json if json is not None else json_format)
    target = logging.getLogger(logger_name)
    target.setLevel(_level(level))
    for handler in list(target.handlers):
        if getattr(handler, _MARK, False):
            target.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(_TEXT_FORMAT))
    if collapse_repeats_sec is not None:
        handler.addFilter(RepeatFilter(collapse_repeats_sec))
    setattr(handler, _MARK, True)
    target.addHandler(handler)
    return handler


def get_logger(name: str) -> logging.Logger:
    """Return the logger called ``name`` (use ``__name__``)."""
    return logging.getLogger(name)


def log_struct(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` at ``level`` with ``fields`` as structured data.

    With :class:`JsonFormatter` the fields become top-level keys; any name is
    allowed (they travel in the record's ``props``, so they never clash with
    LogRecord attributes). Nothing is built when ``level`` is disabled.
    """
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"props": fields}, stacklevel=2)
