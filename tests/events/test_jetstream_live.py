"""Live JetStream subscriptions on the raw delivery path: lost deliveries, heartbeats,
flow control, a consumer lost on the server, and the fallback to nats-py's consumer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from events.jetstream import JetStreamEventLog, live, rawroute
from events.jetstream.subscribe import JetStreamSubscription
from events.log import RecordedEvent
from events.testing import Collector, task_event

pytestmark = [pytest.mark.nats, pytest.mark.asyncio]

HEARTBEAT_SEC = 0.2


@pytest_asyncio.fixture
async def log(nats_url: str, namespace: str) -> AsyncIterator[JetStreamEventLog]:
    async with await JetStreamEventLog.connect(
        nats_url, namespace=namespace, idle_heartbeat_sec=HEARTBEAT_SEC
    ) as log:
        yield log
        await log.delete_streams()


async def _append(log: JetStreamEventLog, n: int, start: int = 0) -> None:
    await log.append_many([(task_event(f"t{i}"), f"tasks.t{i}") for i in range(start, start + n)])


def _live(sub: object) -> live.RawLiveConsumer:
    assert isinstance(sub, JetStreamSubscription)
    assert sub.live is not None  # the raw path runs
    return sub.live


async def test_a_subscription_takes_the_raw_path_and_sees_every_event_once(
    nats_url: str, namespace: str
) -> None:
    # the default heartbeat: a loaded machine never looks like a lost consumer here
    async with await JetStreamEventLog.connect(nats_url, namespace=namespace) as log:
        await _append(log, 10)
        seen = Collector()
        sub = await log.subscribe(seen, stream="tasks")
        await sub.wait_caught_up(10)
        await _append(log, 10, start=10)
        await seen.wait_for(20)
        assert seen.sequences == list(range(1, 21))
        assert [r.subject for r in seen.records] == [f"tasks.t{i}" for i in range(20)]
        assert all(r.headers is not None and "Nats-Msg-Id" in r.headers for r in seen.records)
        assert _live(sub).restarts == 0
        await sub.stop()
        await log.delete_streams()


async def test_a_lost_delivery_recreates_the_consumer_without_loss_or_duplicate(
    log: JetStreamEventLog,
    drop_delivery: Callable[[int], list[int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dropped = drop_delivery(5)
    await log.stop()
    await log.start()  # a new connection: its router takes the lossy dispatch
    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    with caplog.at_level(logging.INFO, logger="events.jetstream"):
        await _append(log, 20)
        await seen.wait_for(20)
    assert dropped == [5]
    assert seen.sequences == list(range(1, 21))
    assert _live(sub).restarts >= 1
    assert any("consumer recreated at seq 5" in r.getMessage() for r in caplog.records)
    await sub.stop()


async def test_a_heartbeat_that_reports_a_lost_last_delivery_recreates_the_consumer(
    log: JetStreamEventLog, drop_delivery: Callable[[int], list[int]]
) -> None:
    dropped = drop_delivery(12)
    await log.stop()
    await log.start()
    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    await _append(log, 12)
    await seen.wait_for(12)  # 12 comes again once an idle heartbeat tells it was sent
    assert dropped == [12]
    assert seen.sequences == list(range(1, 13))
    assert _live(sub).restarts >= 1
    await sub.stop()


async def test_a_slow_handler_holds_back_flow_control_and_loses_nothing(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "LIVE_BUFFER_SIZE", 4)
    got: list[int] = []
    done = asyncio.Event()

    async def slow(recorded: RecordedEvent) -> None:
        got.append(recorded.sequence)
        if len(got) % 100 == 0:
            await asyncio.sleep(0)  # let deliveries pile up behind the handler
        if len(got) == 3000:
            done.set()

    sub = await log.subscribe(slow, stream="tasks")
    await _append(log, 3000)
    async with asyncio.timeout(60):
        await done.wait()
    assert got == list(range(1, 3001))
    await sub.stop()


async def test_a_consumer_lost_on_the_server_is_recreated_after_missed_heartbeats(
    log: JetStreamEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    await _append(log, 3)
    await seen.wait_for(3)
    consumer = _live(sub)
    nc = log.connection
    assert nc is not None
    stream = log._conn.opts.spec("tasks").name
    with caplog.at_level(logging.INFO, logger="events.jetstream"):
        # deleted behind its back: no delivery nor heartbeat comes any more
        await nc.request(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer._consumer}", b"", timeout=5)
        await _append(log, 3, start=3)
        await seen.wait_for(6)
    assert seen.sequences == list(range(1, 7))
    assert consumer.restarts >= 1
    assert any("no delivery nor heartbeat" in r.getMessage() for r in caplog.records)
    await sub.stop()


async def test_deliveries_held_already_are_passed_over_undecoded(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    original = live.parse_delivery_headers

    def counting(raw: bytes) -> dict[str, str] | None:
        parsed.append(raw)
        return original(raw)

    monkeypatch.setattr(live, "parse_delivery_headers", counting)
    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    sub.applied_through = lambda: 5
    await _append(log, 7)
    await seen.wait_for(2)
    assert seen.sequences == [6, 7]
    assert len(parsed) == 2  # 1-5 were not even parsed
    assert sub.position == 7
    await sub.stop()


async def test_stop_drops_the_route_and_the_consumer(log: JetStreamEventLog) -> None:
    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    consumer = _live(sub)
    nc = log.connection
    assert nc is not None
    router = rawroute.install_router(nc)
    assert router is not None
    sid = consumer._sid
    assert sid in router.routes
    await sub.stop()
    assert sid not in router.routes
    await _append(log, 2)  # nobody hands these on, nothing fails
    assert seen.sequences == []


async def test_without_the_router_a_subscription_runs_on_nats_py_s_consumer(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rawroute, "FAST_PATH_NATS_PY", ("0.0.0-never",))
    await log.stop()
    await log.start()  # a new connection decides again
    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    assert isinstance(sub, JetStreamSubscription) and sub.live is None
    await _append(log, 5)
    await seen.wait_for(5)
    assert seen.sequences == list(range(1, 6))
    await sub.stop()
