"""Bounded JetStream reads: raw header parsing, lost deliveries, flow control."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from nats.aio.client import Client

from events.jetstream import JetStreamEventLog, ordered_read, rawroute
from events.jetstream.rawroute import parse_delivery_headers
from events.testing import task_event


@pytest.mark.parametrize(
    "block",
    [
        b"NATS/1.0\r\nNats-Msg-Id: abc\r\nConverge-Type: task.submitted\r\n\r\n",
        b"NATS/1.0\r\nA:1\r\nB:\t two \r\n\r\n",
        b"NATS/1.0\r\nbad key: x\r\nok: y\r\nno-colon\r\n:empty-name\r\n\r\n",
        b"NATS/1.0\r\nK\x1fey: x\r\nKey: \x1fv\x1f\r\n\r\n",
        "NATS/1.0\r\nName: caf\u00e9\r\nN\u00e4me: x\r\n\r\n".encode(),
        b"NATS/1.0\r\nBroken: \xff\xfe\r\n\r\n",
        b"NATS/1.0\r\nDup: 1\r\nDup: 2\r\n\r\n",
    ],
)
def test_delivery_headers_parse_like_nats_py(block: bytes) -> None:
    assert parse_delivery_headers(block) == (Client._parse_header_lines(block[10:]) or None)


@pytest.mark.parametrize("block", [b"NATS/1.0\r\n", b"NATS/1.0\r\n\r\n", b"NATS/1.0\r\nx\r\n\r\n"])
def test_delivery_headers_without_fields_are_none(block: bytes) -> None:
    assert parse_delivery_headers(block) is None


@pytest_asyncio.fixture
async def log(nats_url: str, namespace: str) -> AsyncIterator[JetStreamEventLog]:
    async with await JetStreamEventLog.connect(
        nats_url, namespace=namespace, idle_heartbeat_sec=0.2
    ) as log:
        yield log
        await log.delete_streams()


def _force_stock_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the fast path's version precondition, as a nats-py upgrade would."""
    monkeypatch.setattr(rawroute, "FAST_PATH_NATS_PY", ("0.0.0-never",))


@pytest_asyncio.fixture(params=["fast", "stock"])
async def any_path_log(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, nats_url: str, namespace: str
) -> AsyncIterator[JetStreamEventLog]:
    """A log reading on the fast path, or on nats-py's stock consumer (the fallback)."""
    if request.param == "stock":
        _force_stock_reads(monkeypatch)
    async with await JetStreamEventLog.connect(
        nats_url, namespace=namespace, idle_heartbeat_sec=0.2
    ) as log:
        yield log
        await log.delete_streams()


async def _append(log: JetStreamEventLog, n: int) -> None:
    await log.append_many([(task_event(f"t{i}"), f"tasks.t{i}") for i in range(n)])


@pytest.mark.nats
@pytest.mark.asyncio
async def test_a_read_restarts_after_a_lost_delivery(
    log: JetStreamEventLog,
    drop_delivery: Callable[[int], list[int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _append(log, 20)
    dropped = drop_delivery(5)
    await log.stop()
    await log.start()  # a new connection: its router takes the lossy dispatch
    with caplog.at_level(logging.INFO, logger="events.jetstream"):
        seqs = [r.sequence async for r in log.read(stream="tasks")]
    assert dropped == [5]
    assert seqs == list(range(1, 21))
    assert any("restarting its consumer at seq 5" in r.getMessage() for r in caplog.records)


@pytest.mark.nats
@pytest.mark.asyncio
async def test_a_read_restarts_when_a_heartbeat_reports_a_lost_last_delivery(
    log: JetStreamEventLog,
    drop_delivery: Callable[[int], list[int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _append(log, 12)
    dropped = drop_delivery(12)
    await log.stop()
    await log.start()
    with caplog.at_level(logging.INFO, logger="events.jetstream"):
        seqs = [r.sequence async for r in log.read(stream="tasks")]
    assert dropped == [12]
    assert seqs == list(range(1, 13))
    assert any("restarting its consumer at seq 12" in r.getMessage() for r in caplog.records)


@pytest.mark.nats
@pytest.mark.asyncio
async def test_a_slow_reader_holds_back_flow_control(
    any_path_log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = any_path_log
    monkeypatch.setattr(ordered_read, "READ_BUFFER_SIZE", 4)
    await _append(log, 3000)
    seqs = [r.sequence async for r in log.read(stream="tasks")]
    assert seqs == list(range(1, 3001))
    assert [r.sequence async for r in log.read(subject="tasks.t2999")] == [3000]


@pytest.mark.nats
@pytest.mark.asyncio
async def test_concurrent_reads_on_one_connection_stay_apart(
    any_path_log: JetStreamEventLog,
) -> None:
    log = any_path_log
    await _append(log, 500)

    async def read(subject: str | None) -> list[int]:
        return [r.sequence async for r in log.read(stream="tasks", subject=subject)]

    everything, one, again = await asyncio.gather(read(None), read("tasks.t42"), read(None))
    assert everything == again == list(range(1, 501))
    assert one == [43]


@pytest.mark.nats
@pytest.mark.asyncio
async def test_reads_by_range_and_time_on_either_path(any_path_log: JetStreamEventLog) -> None:
    log = any_path_log
    await _append(log, 50)
    records = [r async for r in log.read(stream="tasks")]
    assert [r.sequence for r in records] == list(range(1, 51))
    assert [r.sequence async for r in log.read(stream="tasks", start_seq=10, end_seq=12)] == [
        10,
        11,
        12,
    ]
    middle = records[20].time
    after = [r.sequence async for r in log.read(stream="tasks", start_time=middle)]
    assert after and after[0] <= 21 and after[-1] == 50
    assert [r.sequence async for r in log.read(subject="tasks.nobody")] == []
    assert [r async for r in log.read(stream="tasks", start_seq=51)] == []


@pytest.mark.nats
@pytest.mark.asyncio
async def test_a_nats_py_the_fast_path_was_not_checked_against_reads_on_the_stock_consumer(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await _append(log, 30)
    _force_stock_reads(monkeypatch)
    await log.stop()
    await log.start()  # a new connection decides again
    with caplog.at_level(logging.WARNING, logger="events.jetstream"):
        assert [r.sequence async for r in log.read(stream="tasks")] == list(range(1, 31))
        assert [r.sequence async for r in log.read(stream="tasks")] == list(range(1, 31))
    nc = log.connection
    assert nc is not None
    assert rawroute.install_router(nc) is None
    warnings = [r for r in caplog.records if "fast JetStream reads are off" in r.getMessage()]
    assert len(warnings) == 1  # once per connection
    assert "not a version the fast read path was checked against" in warnings[0].getMessage()


def test_a_changed_process_msg_fails_the_precondition() -> None:
    class Changed:
        async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes) -> None:
            return None

    problem = rawroute.fast_path_problem(Changed())  # type: ignore[arg-type]
    assert problem == "nats-py's Client._process_msg takes (sid, subject, reply, data)"
    assert rawroute.fast_path_problem(object()) == "nats-py's Client has no _process_msg"  # type: ignore[arg-type]
    assert rawroute.fast_path_problem(Client()) is None
