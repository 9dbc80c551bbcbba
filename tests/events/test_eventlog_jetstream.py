"""JetStream-only behaviour: restarts, raw input, upcasting, provisioning, races."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import nats
import nats.js.errors
import orjson
import pytest
import pytest_asyncio

import events
from converge.errors import (
    ClosedError,
    ConcurrencyError,
    ConfigError,
    ConvergeTimeoutError,
    NotFoundError,
)
from events.codec import HDR_EVENT_TYPE, HDR_EVENT_VERSION, HDR_MSG_ID
from events.jetstream import JetStreamEventLog
from events.server import EmbeddedNatsServer
from events.subjects import KNOWN_KINDS, stream_name
from events.testing import Collector, collect, task_event

pytestmark = pytest.mark.nats


@pytest_asyncio.fixture
async def log(nats_url: str, namespace: str) -> AsyncIterator[JetStreamEventLog]:
    async with await JetStreamEventLog.connect(nats_url, namespace=namespace) as log:
        yield log
        assert sorted(await log.delete_streams())[0] == f"{namespace.upper()}_AGENTS"
        assert await collect(log) == []


@pytest_asyncio.fixture
async def raw_nc(nats_url: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.mark.asyncio
async def test_events_survive_a_server_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    server = EmbeddedNatsServer(data_dir=data_dir)
    await server.start()
    written: list[events.RecordedEvent] = []
    try:
        async with await JetStreamEventLog.connect(server.url, namespace="restart") as log:
            for i in range(20):
                written.append(await log.append(task_event(f"t{i}"), subject=f"tasks.t{i % 4}"))
            written.append(
                await log.append(events.PoolCreated(pool={"id": "p"}), subject="pools.p")
            )
    finally:
        await server.stop()
    server = EmbeddedNatsServer(data_dir=data_dir)
    await server.start()
    try:
        async with await JetStreamEventLog.connect(server.url, namespace="restart") as log:
            back = await collect(log)
            assert sorted((r.stream, r.sequence, r.event) for r in back) == sorted(
                (r.stream, r.sequence, r.event) for r in written
            )
            assert await log.last_sequence(stream="tasks", subject="tasks.t3") == 20
            rec = await log.append(task_event(), subject="tasks.t3", expected_version=20)
            assert rec.sequence == 21
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_one_winner_across_connections(nats_url: str, namespace: str) -> None:
    logs = [await JetStreamEventLog.connect(nats_url, namespace=namespace) for _ in range(4)]
    try:
        for round_no in range(5):
            version = await logs[0].last_sequence(stream="tasks", subject="tasks.race")
            outcomes = await asyncio.gather(
                *(
                    log.append(
                        events.TaskClaimed(task_id="race", agent_id=f"a{i}", claimed_at=1.0),
                        subject="tasks.race",
                        expected_version=version,
                    )
                    for i, log in enumerate(logs * 2)
                ),
                return_exceptions=True,
            )
            wins = [o for o in outcomes if isinstance(o, events.RecordedEvent)]
            assert len(wins) == 1, (round_no, outcomes)
            assert all(isinstance(o, ConcurrencyError) for o in outcomes if o is not wins[0]), (
                outcomes
            )
    finally:
        for log in logs:
            await log.close()


@pytest.mark.asyncio
async def test_retry_with_the_same_id_is_stored_once(log: JetStreamEventLog) -> None:
    event = task_event("once")
    first = await log.append(event, subject="tasks.once", expected_version=0)
    # a retry that raced its own success: the server refuses it (10071) before dedupe
    again = await log.append(event, subject="tasks.once", expected_version=0)
    assert (again.sequence, again.event) == (first.sequence, event)
    dup = await log.append(event, subject="tasks.once")  # plain dedupe (duplicate ack)
    assert dup.sequence == first.sequence
    later = events.TaskClaimed(task_id="once", agent_id="a", claimed_at=1.0)
    second = await log.append(later, subject="tasks.once", expected_version=first.sequence)
    assert (
        await log.append(later, subject="tasks.once", expected_version=first.sequence)
    ).sequence == second.sequence
    assert len(await collect(log, subject="tasks.once")) == 2
    with pytest.raises(ConcurrencyError) as info:
        await log.append(task_event(), subject="tasks.once", expected_version=first.sequence)
    assert (info.value.expected, info.value.actual) == (first.sequence, second.sequence)


@pytest.mark.asyncio
async def test_a_fresh_event_that_lost_a_race_is_a_conflict_without_a_lookup(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = await log.append(task_event("fresh"), subject="tasks.fresh", expected_version=0)
    lookups: list[dict[str, Any]] = []
    get_msg = log._admin.get_msg

    async def counted(kind: str, **request: Any) -> Any:
        lookups.append(request)
        return await get_msg(kind, **request)

    monkeypatch.setattr(log._admin, "get_msg", counted)
    with pytest.raises(ConcurrencyError) as info:  # the refusal names the last sequence
        await log.append(task_event("fresh"), subject="tasks.fresh", expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, winner.sequence)
    assert lookups == []
    # an event this log published before may be the one stored: it is looked up
    again = await log.append(winner.event, subject="tasks.fresh", expected_version=0)
    assert again.sequence == winner.sequence
    assert len(lookups) == 1


@pytest.mark.asyncio
async def test_a_resend_is_recognised_after_its_id_was_forgotten(
    log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("events.jetstream.append._SENT_MEMORY", 2)
    event = task_event("early")
    first = await log.append(event, subject="tasks.early", expected_version=0)
    for i in range(6):  # three generations of two ids: the first id is forgotten
        await log.append(task_event(f"later{i}"), subject=f"tasks.later{i}")
    from events.jetstream.append import _SENT

    assert event.id not in _SENT._sent | _SENT._before
    again = await log.append(event, subject="tasks.early", expected_version=0)
    assert again.sequence == first.sequence


@pytest.mark.asyncio
async def test_an_event_stored_through_another_log_of_the_process_returns_the_original(
    nats_url: str, namespace: str
) -> None:
    """Two connections of one process: the second append of the event is no conflict."""
    async with (
        await JetStreamEventLog.connect(nats_url, namespace=namespace) as first_log,
        await JetStreamEventLog.connect(nats_url, namespace=namespace) as second_log,
    ):
        event = task_event("twice")  # made after both logs started
        first = await first_log.append(event, subject="tasks.twice", expected_version=0)
        again = await second_log.append(event, subject="tasks.twice", expected_version=0)
        assert again.sequence == first.sequence
        assert len(await collect(second_log, subject="tasks.twice")) == 1


@pytest.mark.asyncio
async def test_an_event_from_before_the_log_started_is_looked_up(
    nats_url: str, namespace: str
) -> None:
    event = task_event("elsewhere")
    async with await JetStreamEventLog.connect(nats_url, namespace=namespace) as other:
        first = await other.append(event, subject="tasks.elsewhere", expected_version=0)
    async with await JetStreamEventLog.connect(nats_url, namespace=namespace) as log:
        await log.append(task_event("elsewhere"), subject="tasks.elsewhere", expected_version=1)
        again = await log.append(event, subject="tasks.elsewhere", expected_version=0)
        assert again.sequence == first.sequence
        assert len(await collect(log, subject="tasks.elsewhere")) == 2


class ItemTitled(events.Event):
    type: ClassVar[str] = "test.item_titled"
    version: ClassVar[int] = 2

    item_id: str
    title: str


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["title"] = data.pop("name").upper()
    return data


@pytest.mark.asyncio
async def test_old_versions_are_upcast_on_read(nats_url: str, namespace: str, raw_nc: Any) -> None:
    registry = events.default_registry.copy()
    registry.register(ItemTitled)
    registry.register_upcaster("test.item_titled", 1, _v1_to_v2)
    async with await JetStreamEventLog.connect(
        nats_url, namespace=namespace, registry=registry
    ) as log:
        await log.append(ItemTitled(item_id="i", title="NEW"), subject="items.i")
        body = orjson.dumps({"id": "old1", "occurred_at": 1.0, "item_id": "i", "name": "abc"})
        headers = {HDR_EVENT_TYPE: "test.item_titled", HDR_EVENT_VERSION: "1", HDR_MSG_ID: "old1"}
        await raw_nc.jetstream().publish(f"{namespace}.items.i", body, headers=headers)
        back = await collect(log, stream="items")
        assert [(type(r.event), r.event.title) for r in back] == [  # type: ignore[attr-defined]
            (ItemTitled, "NEW"),
            (ItemTitled, "ABC"),
        ]
        assert back[1].event.id == "old1"


async def _publish_bad_messages(raw_nc: Any, subject: str) -> None:
    js = raw_nc.jetstream()
    good_body, good_headers = events.encode_event(events.TaskCancelled(task_id="x"))

    def headers(**changes: str) -> dict[str, str]:
        return {**good_headers, HDR_MSG_ID: uuid.uuid4().hex, **changes}

    await js.publish(subject, b"\x00garbage", headers=headers())
    await js.publish(subject, good_body, headers=headers(**{HDR_EVENT_TYPE: "no.such"}))
    await js.publish(subject, good_body, headers=headers(**{HDR_EVENT_VERSION: "7"}))
    # no headers at all, and a body that does not name its type (as bodies once did not)
    await js.publish(subject, orjson.dumps(events.TaskCancelled(task_id="x").model_dump()))


@pytest.mark.asyncio
async def test_readers_skip_and_count_undecodable_messages(
    log: JetStreamEventLog, raw_nc: Any, namespace: str
) -> None:
    await log.append(task_event("a"), subject="tasks.a")
    await _publish_bad_messages(raw_nc, f"{namespace}.tasks.a")
    await log.append(task_event("b"), subject="tasks.b")
    back = await collect(log, stream="tasks")
    assert [r.sequence for r in back] == [1, 6]
    assert log.skipped_events == 4

    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    try:
        await sub.wait_caught_up(10)
        assert seen.sequences == [1, 6]
        await _publish_bad_messages(raw_nc, f"{namespace}.tasks.c")
        await log.append(task_event("c"), subject="tasks.c")
        await seen.wait_for(3)
        assert seen.sequences == [1, 6, 11]
        assert sub.skipped == 8
        assert log.skipped_events == 12
    finally:
        await sub.stop()


@pytest.mark.asyncio
async def test_memory_log_skips_raw_garbage_too() -> None:
    log = events.MemoryEventLog()
    await log.append(task_event(), subject="tasks.a")
    log.append_raw("tasks.a", b"garbage", {HDR_EVENT_TYPE: "task.submitted"})
    log.append_raw("tasks.a", b"{}", None)
    await log.append(task_event(), subject="tasks.a")
    assert [r.sequence for r in await collect(log)] == [1, 4]
    assert log.skipped_events == 2
    seen = Collector()
    async with await log.subscribe(seen, stream="tasks") as sub:
        await sub.wait_caught_up(10)
        assert seen.sequences == [1, 4]
    await log.stop()


@pytest.mark.asyncio
async def test_clients_use_existing_streams_as_they_are(
    nats_url: str, namespace: str, raw_nc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace, storage="memory")
    await log.close()
    jsm = raw_nc.jsm()
    info = await jsm.stream_info(f"{namespace.upper()}_TASKS")
    assert info.config.subjects == [f"{namespace}.tasks.>"]
    assert info.config.duplicate_window == 120
    with caplog.at_level(logging.WARNING, logger="events.jetstream"):
        log = await JetStreamEventLog.connect(
            nats_url, namespace=namespace, storage="file", duplicate_window_sec=30, max_msgs=1000
        )
        await log.append(task_event(), subject="tasks.a")
    warnings = [r.getMessage() for r in caplog.records if "differs from this" in r.getMessage()]
    assert len(warnings) == len(KNOWN_KINDS)  # one per stream, none per append
    assert "duplicate_window_sec 120.0 -> 30.0" in warnings[0]
    assert "storage 'memory' -> 'file'" in warnings[0]
    info = await jsm.stream_info(f"{namespace.upper()}_COORDINATION")
    assert (info.config.duplicate_window, info.config.max_msgs) == (120, -1)  # unchanged
    with pytest.raises(ConfigError, match="storage"):
        await log.update_streams()  # JetStream cannot change the storage type
    await log.close()

    log = await JetStreamEventLog.connect(
        nats_url, namespace=namespace, storage="memory", duplicate_window_sec=30, max_msgs=1000
    )
    try:
        changed = await log.update_streams()
        name = f"{namespace.upper()}_COORDINATION"
        assert changed[name] == {"duplicate_window_sec": (120.0, 30.0), "max_msgs": (-1, 1000)}
        info = await jsm.stream_info(name)
        assert (info.config.duplicate_window, info.config.max_msgs) == (30, 1000)
        assert not any((await log.update_streams()).values())  # up to date now
        status = await log.stream_info("coordination")
        assert (status.name, status.duplicate_window_sec, status.max_msgs) == (name, 30.0, 1000)
        assert await log.stream_info(name) == status
        with pytest.raises(NotFoundError, match=f"{namespace.upper()}_NOPE"):
            await log.stream_info("nope")
        assert [s.name for s in await log.streams_info()] == sorted(
            stream_name(namespace, kind) for kind in KNOWN_KINDS
        )
    finally:
        await log.close()


@pytest.mark.asyncio
async def test_a_read_only_log_creates_and_changes_nothing(
    nats_url: str, namespace: str, raw_nc: Any
) -> None:
    with pytest.raises(NotFoundError, match=f"namespace {namespace!r} has no streams"):
        await JetStreamEventLog.connect(nats_url, namespace=namespace, create_streams=False)
    jsm = raw_nc.jsm()
    assert [
        n for n in await jsm.streams_info() if n.config.name.startswith(namespace.upper())
    ] == []

    async with await JetStreamEventLog.connect(nats_url, namespace=namespace, replicas=1) as writer:
        await writer.append(task_event(), subject="tasks.a")
    await jsm.delete_stream(f"{namespace.upper()}_POOLS")
    reader = await JetStreamEventLog.connect(
        nats_url, namespace=namespace, create_streams=False, max_msgs=5, duplicate_window_sec=1
    )
    try:
        assert not reader.create_streams
        assert [r.sequence for r in await collect(reader, stream="tasks")] == [1]
        seen = Collector()
        sub = await reader.subscribe(seen, stream="tasks")
        await seen.wait_for(1)
        await sub.stop()
        missing = f"{namespace.upper()}_POOLS"
        with pytest.raises(NotFoundError, match=missing):
            await collect(reader, stream="pools")
        with pytest.raises(NotFoundError, match=missing):
            await reader.subscribe(seen, stream="pools")
        with pytest.raises(NotFoundError, match=missing):
            await reader.append(task_event(), subject="pools.p")
        with pytest.raises(ConfigError, match="read-only"):
            await reader.update_streams()
        info = await jsm.stream_info(f"{namespace.upper()}_TASKS")
        assert (info.config.max_msgs, info.config.duplicate_window) == (-1, 120)
        with pytest.raises(nats.js.errors.NotFoundError):
            await jsm.stream_info(missing)
    finally:
        await reader.close()


@pytest.mark.asyncio
async def test_concurrent_provisioning_of_a_new_kind(nats_url: str, namespace: str) -> None:
    logs = [await JetStreamEventLog.connect(nats_url, namespace=namespace) for _ in range(3)]
    try:
        recs = await asyncio.gather(
            *(log.append(task_event(), subject=f"widgets.w{i}") for i, log in enumerate(logs))
        )
        assert sorted(r.sequence for r in recs) == [1, 2, 3]
        assert await logs[0].last_sequence(stream="widgets") == 3
    finally:
        for log in logs:
            await log.close()


@pytest.mark.asyncio
async def test_closed_connection_names_the_fix(nats_url: str, namespace: str) -> None:
    nc = await nats.connect(nats_url)
    log = JetStreamEventLog(nc, namespace=namespace)
    await log.start()
    await log.append(task_event(), subject="tasks.a")
    seen = Collector()
    sub = await log.subscribe(seen, stream="tasks")
    await nc.close()
    with pytest.raises(ClosedError, match="new connection"):
        await log.append(task_event(), subject="tasks.a")
    with pytest.raises(ClosedError, match="new connection"):
        await log.append_many([(task_event(), "tasks.a")])
    with pytest.raises(ClosedError, match="new connection"):
        await collect(log, stream="tasks")
    with pytest.raises(ClosedError, match="new connection"):
        await log.subscribe(seen, stream="tasks")
    with pytest.raises(ClosedError, match="new connection"):
        await log.last_sequence(stream="tasks")
    with pytest.raises(ClosedError, match="new connection"):
        await sub.wait_caught_up(5)
    await log.stop()
    with pytest.raises(ClosedError, match="new connection"):
        await log.start()


@pytest.mark.asyncio
async def test_a_connection_closed_by_nats_fails_fast(nats_url: str, namespace: str) -> None:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    try:
        await log.append(task_event(), subject="tasks.a")
        seen = Collector()
        sub = await log.subscribe(seen, stream="tasks")
        await sub.wait_caught_up(5)
        nc = log.connection
        assert nc is not None
        await nc.close()  # what nats-py does when it gives up reconnecting
        assert not sub.is_active  # failed by the connection's closed callback
        with pytest.raises(ClosedError, match="reconnect"):
            await sub.stop()
        with pytest.raises(ClosedError, match="reconnect"):
            await log.append(task_event(), subject="tasks.a")
        with pytest.raises(ClosedError, match="reconnect"):
            await log.append_many([(task_event(), "tasks.a")])
        with pytest.raises(ClosedError, match="reconnect"):
            await collect(log, stream="tasks")
        with pytest.raises(ClosedError, match="reconnect"):
            await log.last_sequence(stream="tasks")
        with pytest.raises(ClosedError, match="reconnect"):
            await log.subscribe(seen, stream="tasks")
        await log.start()  # a new connection
        assert (await log.append(task_event(), subject="tasks.a")).sequence == 2
    finally:
        await log.start()
        await log.delete_streams()
        await log.close()


@pytest.mark.asyncio
async def test_owned_log_restarts_after_stop(nats_url: str, namespace: str) -> None:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    await log.append(task_event(), subject="tasks.a")
    await log.stop()
    await log.stop()  # idempotent
    with pytest.raises(ClosedError, match=r"call start\(\)"):
        await log.append(task_event(), subject="tasks.a")
    await log.start()  # reconnects
    rec = await log.append(task_event(), subject="tasks.a")
    assert rec.sequence == 2
    await log.close()


@pytest.mark.asyncio
async def test_large_batches_are_pipelined_in_order(log: JetStreamEventLog) -> None:
    log.max_inflight = 64
    batch = [(task_event(), f"tasks.b{i % 7}") for i in range(300)]
    records = await log.append_many(batch)
    assert [r.sequence for r in records] == list(range(1, 301))
    assert [r.event for r in records] == [e for e, _ in batch]


@pytest.mark.asyncio
async def test_deliveries_the_subscriber_holds_are_passed_over(log: JetStreamEventLog) -> None:
    """``applied_through``: what the subscriber has already is not decoded or handled."""
    got = Collector()
    sub = await log.subscribe(got, stream="tasks", start_seq=1)
    sub.applied_through = lambda: 5  # as if 1-5 were applied from their acknowledgements
    records = await log.append_many([(task_event(), f"tasks.h{i}") for i in range(7)])
    assert [r.sequence for r in records] == list(range(1, 8))
    await got.wait_for(2)
    assert got.sequences == [6, 7]  # in order: 1-5 were passed over before 6 came
    assert sub.position == 7
    assert sub.skipped == 0  # passed over is not undecodable
    await sub.stop()


@pytest.mark.asyncio
async def test_connect_needs_a_server() -> None:
    with pytest.raises(ConfigError):
        await JetStreamEventLog.connect(None)
    with pytest.raises(ConfigError):
        await JetStreamEventLog.connect("nats://127.0.0.1:1", namespace="bad.ns")


@pytest.mark.asyncio
async def test_subscription_follows_across_a_server_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    server = EmbeddedNatsServer(data_dir=data_dir)
    await server.start()
    port = server.port
    config = events.BrokerConfig(servers=[server.url], reconnect_time_wait_sec=0.2)
    log = await JetStreamEventLog.connect(
        config=config, namespace="follow", idle_heartbeat_sec=0.5, publish_timeout_sec=1.0
    )
    seen = Collector()
    try:
        await log.append(task_event(), subject="tasks.a")
        sub = await log.subscribe(seen, stream="tasks")
        await sub.wait_caught_up(10)
        await server.stop()
        server = EmbeddedNatsServer(data_dir=data_dir, port=port)
        await server.start()
        # the append waits for the reconnect; the subscription recreates its consumer
        rec = await log.append(task_event(), subject="tasks.a")
        assert rec.sequence == 2
        await seen.wait_for(2, timeout=60)
        assert seen.sequences == [1, 2]
        await sub.stop()
    finally:
        await log.close()
        await server.stop()


@pytest.mark.asyncio
async def test_timed_out_appends_are_stored_once(nats_url: str, namespace: str) -> None:
    impatient = await JetStreamEventLog.connect(
        nats_url, namespace=namespace, publish_timeout_sec=1e-6, publish_retries=2
    )
    event = task_event("slow")
    try:
        with pytest.raises(ConvergeTimeoutError, match="append the same event again"):
            await impatient.append(event, subject="tasks.slow", expected_version=0)
    finally:
        await impatient.close()
    async with await JetStreamEventLog.connect(nats_url, namespace=namespace) as log:
        rec = await log.append(event, subject="tasks.slow", expected_version=0)
        assert rec.sequence == 1
        assert [r.event for r in await collect(log, stream="tasks")] == [event]


def test_backends_satisfy_the_protocol() -> None:
    assert isinstance(events.MemoryEventLog(), events.EventLog)
    assert isinstance(JetStreamEventLog(config=events.BrokerConfig()), events.EventLog)


@pytest.mark.asyncio
async def test_stop_ends_a_read_in_progress(nats_url: str, namespace: str) -> None:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    await log.append_many([(task_event(), "tasks.a") for _ in range(3000)])
    reader = log.read(stream="tasks")
    first = await anext(reader)
    assert first.sequence == 1
    await log.stop()
    with pytest.raises(ClosedError):
        async for _ in reader:
            pass


@pytest.mark.asyncio
async def test_a_stream_deleted_behind_its_back_is_provisioned_again(
    log: JetStreamEventLog, raw_nc: Any, namespace: str
) -> None:
    await log.append(task_event(), subject="tasks.a")
    await raw_nc.jsm().delete_stream(f"{namespace.upper()}_TASKS")
    rec = await log.append(task_event(), subject="tasks.a")
    assert rec.sequence == 1
    assert await log.last_sequence(stream="tasks") == 1
