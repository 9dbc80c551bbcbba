"""Structured logging: JSON lines, extra fields, configure_logging, bad levels."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from converge.errors import ConfigError
from converge.observability.logging import (
    JsonFormatter,
    RepeatFilter,
    configure_logging,
    get_logger,
    log_struct,
)
from converge.observability.tracing import trace


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = get_logger("converge.test.obs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_struct_fields_are_top_level(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    log_struct(logger, logging.INFO, "test message", user="alice", action="login", name="x")
    (line,) = _lines(stream)
    assert line["message"] == "test message"
    assert line["user"] == "alice"
    assert line["action"] == "login"
    assert line["name"] == "x"  # a LogRecord attribute name is fine as a field
    assert line["level"] == "INFO"
    assert line["logger"] == "converge.test.obs"
    assert str(line["timestamp"]).endswith("+00:00")
    assert line["module"] == "test_obs_logging"


def test_extra_fields_and_percent_args(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning("claimed %s", "t1", extra={"agent_id": "a1", "seq": 7})
    (line,) = _lines(stream)
    assert line["message"] == "claimed t1"
    assert line["agent_id"] == "a1"
    assert line["seq"] == 7


def test_unencodable_values_become_repr(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    log_struct(logger, logging.INFO, "odd", obj=object(), data=b"\x00", nested={"s": {1, 2}})
    (line,) = _lines(stream)
    assert str(line["obj"]).startswith("<object object")
    assert line["data"] == "b'\\x00'"


def test_exception_is_included(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = _lines(stream)
    assert "ValueError: boom" in str(line["exception"])


def test_trace_ids_are_added_inside_a_span(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    with trace("op") as span:
        logger.info("inside")
    logger.info("outside")
    inside, outside = _lines(stream)
    assert inside["trace_id"] == span.trace_id
    assert inside["span_id"] == span.span_id
    assert "trace_id" not in outside


def test_disabled_level_builds_nothing(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.setLevel(logging.ERROR)
    log_struct(logger, logging.DEBUG, "should not log", key="value")
    assert stream.getvalue() == ""


def test_configure_logging_json_and_text() -> None:
    stream = io.StringIO()
    name = "converge.test.configured"
    handler = configure_logging("debug", json=True, stream=stream, logger_name=name)
    logger = logging.getLogger(name)
    logger.propagate = False
    try:
        logger.debug("hello %d", 1)
        assert json.loads(stream.getvalue())["message"] == "hello 1"
        text = io.StringIO()
        configure_logging(logging.INFO, json_format=False, stream=text, logger_name=name)
        assert handler not in logger.handlers  # replaced, not stacked
        assert len(logger.handlers) == 1
        logger.info("plain")
        assert " - converge.test.configured - INFO - plain" in text.getvalue()
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True


def test_configure_logging_keeps_foreign_handlers() -> None:
    name = "converge.test.foreign"
    logger = logging.getLogger(name)
    foreign = logging.NullHandler()
    logger.addHandler(foreign)
    try:
        configure_logging(stream=io.StringIO(), logger_name=name)
        configure_logging(stream=io.StringIO(), logger_name=name)
        assert foreign in logger.handlers
        assert len(logger.handlers) == 2
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)


@pytest.mark.parametrize("level", ["LOUD", "", True, 1.5])
def test_bad_level(level: object) -> None:
    with pytest.raises(ConfigError, match="log level"):
        configure_logging(level, logger_name="converge.test.bad")  # type: ignore[arg-type]


def test_conflicting_json_flags() -> None:
    with pytest.raises(ConfigError, match="not both"):
        configure_logging(json=True, json_format=False, logger_name="converge.test.bad")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(
    msg: str, *args: object, level: int = logging.WARNING, name: str = "a"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeat_filter_passes_one_of_a_run_of_similar_warnings_per_window() -> None:
    clock = _Clock()
    repeats = RepeatFilter(10.0, clock=clock)
    refused = "worker %s: claim of %s failed: disk full: event %s (err_code 10023)"
    first = _record(refused, "ab" * 32, "2f66bd72-31c9-45eb-92f2-52b099719894", "548b62d94908")
    assert repeats.filter(first)
    held = [
        _record(refused, "cd" * 32, f"{i:08x}-31c9-45eb-92f2-52b099719894", f"{i:012x}")
        for i in range(500)
    ]
    assert not any(repeats.filter(r) for r in held)
    # another cause, another logger, another level, or a DEBUG line: each passes
    assert repeats.filter(_record("nats connection error: refused port %d", 4222))
    assert repeats.filter(_record(refused, "x", "y", "z", name="b"))
    assert repeats.filter(_record(refused, "x", "y", "z", level=logging.ERROR))
    assert all(
        repeats.filter(_record(refused, "x", "y", "z", level=logging.DEBUG)) for _ in range(3)
    )
    clock.now += 10.0
    after = _record(refused, "ef" * 32, "0" * 8, "1" * 12)
    assert repeats.filter(after)
    assert after.getMessage().endswith("(500 similar held back since the last one)")
    again = _record(refused, "ef" * 32, "0" * 8, "1" * 12)
    assert not repeats.filter(again)


def test_configure_logging_collapses_repeats_only_when_asked() -> None:
    stream = io.StringIO()
    logger = get_logger("converge.test.repeats")
    logger.propagate = False
    try:
        configure_logging("WARNING", stream=stream, logger_name=logger.name)
        for i in range(5):
            logger.warning("append of event %s refused", f"{i:032x}")
        assert stream.getvalue().count("refused") == 5
        configure_logging(
            "WARNING", stream=stream, logger_name=logger.name, collapse_repeats_sec=60.0
        )
        for i in range(5):
            logger.warning("append of event %s refused", f"{i:032x}")
        assert stream.getvalue().count("refused") == 6
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
