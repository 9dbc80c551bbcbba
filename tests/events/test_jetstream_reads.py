"""Bounded JetStream reads: raw header parsing, lost deliveries, flow control."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
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


@pytest.fixture
async def log(nats_url: str, namespace: str) -> AsyncIterator[JetStreamEventLog]:
    async with await JetStreamEventLog.connect(
        nats_url, namespace=namespace, idle_heartbeat_sec=0.2
    ) as log:
        yield log
        await log.delete_streams()


def _drop_delivery(monkeypatch: pytest.MonkeyPatch, stream_seq: int) -> list[int]:
    """Make reads lose the first delivery of ``stream_seq``; return the dropped seqs."""
    dropped: list[int] = []
    original = rawroute.RawRouter.process_msg

    async def lossy(
        self: rawroute.RawRouter,
        sid: int,
        subject: bytes,
        reply: bytes,
        data: bytes,
        headers: bytes,
    ) -> None:
        tokens = reply.split(b".")
        if sid in self.routes and not dropped and len(tokens) == 9 and int(tokens[5]) == stream_seq:
            dropped.append(stream_seq)
            return
        await original(self, sid, subject, reply, data, headers)

    monkeypatch.setattr(rawroute.RawRouter, "process_msg", lossy)
    return dropped


async def _append(log: JetStreamEventLog, n: int) -> None:
    await log.append_many([(task_event(f"t{i}"), f"tasks.t{i}") for i in range(n)])


@pytest.mark.nats
async def test_a_read_restarts_after_a_lost_delivery(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await _append(log, 20)
    dropped = _drop_delivery(monkeypatch, 5)
    await log.stop()
    await log.start()  # a new connection: its router takes the lossy dispatch
    with caplog.at_level(logging.INFO, logger="events.jetstream"):
        seqs = [r.sequence async for r in log.read(stream="tasks")]
    assert dropped == [5]
    assert seqs == list(range(1, 21))
    assert any("restarting its consumer at seq 5" in r.getMessage() for r in caplog.records)


@pytest.mark.nats
async def test_a_read_restarts_when_a_heartbeat_reports_a_lost_last_delivery(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await _append(log, 12)
    dropped = _drop_delivery(monkeypatch, 12)
    await log.stop()
    await log.start()
    with caplog.at_level(logging.INFO, logger="events.jetstream"):
        seqs = [r.sequence async for r in log.read(stream="tasks")]
    assert dropped == [12]
    assert seqs == list(range(1, 13))
    assert any("restarting its consumer at seq 12" in r.getMessage() for r in caplog.records)


@pytest.mark.nats
async def test_a_slow_reader_holds_back_flow_control(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ordered_read, "READ_BUFFER_SIZE", 4)
    await _append(log, 3000)
    seqs = [r.sequence async for r in log.read(stream="tasks")]
    assert seqs == list(range(1, 3001))
    assert [r.sequence async for r in log.read(subject="tasks.t2999")] == [3000]


@pytest.mark.nats
async def test_concurrent_reads_on_one_connection_stay_apart(log: JetStreamEventLog) -> None:
    await _append(log, 500)

    async def read(subject: str | None) -> list[int]:
        return [r.sequence async for r in log.read(stream="tasks", subject=subject)]

    everything, one, again = await asyncio.gather(read(None), read("tasks.t42"), read(None))
    assert everything == again == list(range(1, 501))
    assert one == [43]
