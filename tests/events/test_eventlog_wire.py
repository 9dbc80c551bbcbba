"""Appends on the wire: frames as nats-py writes them, acknowledgements routed raw."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from converge.errors import ConcurrencyError, ConvergeTimeoutError, EventLogError
from events.jetstream import JetStreamEventLog, rawroute
from events.jetstream.append import _SLOTS_FROM_SEC
from events.jetstream.wire import _KNOWN_NAMES, ack_status, direct_write_problem, hpub_frame
from events.server import EmbeddedNatsServer
from events.testing import task_event


async def _nats_py_frame(subject: str, reply: str, headers: dict[str, str], body: bytes) -> bytes:
    """What nats-py 2.16's publish puts on its outgoing buffer for the same message."""
    nc = Client()  # never connected: the frame stays in its buffer
    await nc._send_publish(subject, reply, body, len(body), dict(headers))
    [frame] = nc._pending
    return frame


_names = st.one_of(
    st.sampled_from(sorted(_KNOWN_NAMES)),
    st.text(st.sampled_from("Ab-_.~ \t\r\n:é"), max_size=8),
)
_values = st.one_of(
    st.text(max_size=20),
    st.text(st.sampled_from("a \t\r\n\x0b\x1c\x85\xa0\u2028é"), max_size=8),
    st.sampled_from(["", " ", "0", "\ud800"]),  # a lone surrogate cannot be UTF-8
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _values, max_size=6), st.binary(max_size=40))
def test_frames_are_byte_for_byte_what_nats_py_sends(headers: dict[str, str], body: bytes) -> None:
    subject, reply = "ns.tasks.t1", "_INBOX.abc.17"
    try:
        expected: bytes | type[BaseException] = asyncio.run(
            _nats_py_frame(subject, reply, headers, body)
        )
    except (nats.errors.BadHeaderError, UnicodeEncodeError) as exc:
        expected = type(exc)
    try:
        got: bytes | type[BaseException] = hpub_frame(subject, reply, headers, body)
    except (nats.errors.BadHeaderError, UnicodeEncodeError) as exc:
        got = type(exc)
    assert got == expected


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NATS/1.0 503\r\n\r\n", "503"),
        (b"NATS/1.0 408 Request Timeout\r\n\r\n", "408"),
        (b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n", ""),
        (b"NATS/1.0 abc\r\n\r\n", ""),
        (b"", ""),
        (None, ""),
    ],
)
def test_the_status_of_a_raw_acknowledgement(raw: bytes | None, status: str) -> None:
    assert ack_status(raw) == status


@pytest_asyncio.fixture(params=["direct", "nats-py"])
async def log(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, nats_url: str, namespace: str
) -> AsyncIterator[JetStreamEventLog]:
    """A log on the direct write path, or publishing through nats-py (a nats-py upgrade)."""
    if request.param == "nats-py":
        monkeypatch.setattr(rawroute, "FAST_PATH_NATS_PY", ("0.0.0-never",))
    async with await JetStreamEventLog.connect(nats_url, namespace=namespace) as log:
        yield log
        await log.delete_streams()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_the_direct_path_runs_on_the_pinned_nats_py(log: JetStreamEventLog) -> None:
    nc = log.connection
    assert nc is not None
    problem = direct_write_problem(nc)
    appender = log._appender
    if problem is None:  # the pinned nats-py: frames and acknowledgements skip nats-py
        assert appender._writer is not None and appender._ack_sid is not None
        assert appender._router is not None and appender._ack_sid in appender._router.routes
    else:
        assert appender._writer is None
    first = await log.append(task_event("a"), subject="tasks.a", expected_version=0)
    assert first.sequence == 1


@pytest.mark.nats
@pytest.mark.asyncio
async def test_concurrent_appends_settle_each_on_its_own(log: JetStreamEventLog) -> None:
    """Gathered appends: each its own message, id and expected version; losers raise."""
    events = [task_event(f"t{i}") for i in range(50)]
    stored = await asyncio.gather(
        *(log.append(e, subject=f"tasks.t{i}", expected_version=0) for i, e in enumerate(events))
    )
    assert sorted(r.sequence for r in stored) == list(range(1, 51))
    assert [r.event.id for r in stored] == [e.id for e in events]
    again = await asyncio.gather(
        *(log.append(task_event(), subject=f"tasks.t{i}", expected_version=0) for i in range(5)),
        log.append(events[7], subject="tasks.t7", expected_version=0),  # a retry: the original
        return_exceptions=True,
    )
    assert all(isinstance(outcome, ConcurrencyError) for outcome in again[:5])
    assert isinstance(again[5], type(stored[7])) and again[5].sequence == stored[7].sequence
    read = [r async for r in log.read(stream="tasks")]
    assert [r.event.id for r in read] == [
        r.event.id for r in sorted(stored, key=lambda r: r.sequence)
    ]


@pytest.mark.nats
@pytest.mark.asyncio
async def test_an_event_above_max_payload_is_refused_by_name(log: JetStreamEventLog) -> None:
    nc = log.connection
    assert nc is not None
    big = task_event("big", blob="x" * (nc.max_payload + 1))
    with pytest.raises(EventLogError, match="above the server's max_payload"):
        await log.append(big, subject="tasks.big")
    assert (await log.append(task_event("small"), subject="tasks.small")).sequence == 1


@pytest.mark.nats
@pytest.mark.asyncio
async def test_an_append_nobody_answers_times_out_on_a_shared_deadline(tmp_path: Path) -> None:
    """Timeouts of a second or more wait on shared deadline slots, not a timer each."""
    server = EmbeddedNatsServer(data_dir=tmp_path / "nats", start_timeout_sec=60)
    await server.start()
    log = await JetStreamEventLog.connect(
        server.url, namespace="deadline", publish_timeout_sec=_SLOTS_FROM_SEC, publish_retries=0
    )
    assert server.pid is not None
    stopped = False
    try:
        await log.append(task_event(), subject="tasks.a")
        os.kill(server.pid, signal.SIGSTOP)  # takes the bytes, answers nothing
        stopped = True
        await asyncio.to_thread(os.waitid, os.P_PID, server.pid, os.WSTOPPED | os.WNOWAIT)
        with pytest.raises(ConvergeTimeoutError, match="append the same event again"):
            await log.append(task_event(), subject="tasks.b")
        assert log._appender._deadlines == {}  # the slot's timer fired and is gone
    finally:
        if stopped:
            os.kill(server.pid, signal.SIGCONT)
        await log.close()
        await server.stop()
