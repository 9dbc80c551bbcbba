# Over 400 lines: the whole EventLog contract suite every backend runs, kept in one place.
"""The EventLog contract suite, shipped with the package so every backend runs it.

Use it from a test module that provides an ``event_log`` fixture yielding a
started log on fresh, empty storage (and closing it afterwards; some tests close
the log and ``start()`` it again, so the teardown may find it open or closed)::

    import pytest
    from events.testing import EventLogContract

    @pytest_asyncio.fixture(params=["memory", pytest.param("jetstream", marks=pytest.mark.nats)])
    async def event_log(request): ...

    class TestEventLogContract(EventLogContract):
        pass

The tests never sleep to synchronise and never assert on wall-clock durations.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import pytest

from converge.errors import (
    ClosedError,
    ConcurrencyError,
    ConfigError,
    ConvergeTimeoutError,
    DecodeError,
)
from events.base import Event
from events.log import EventLog, RecordedEvent
from events.subjects import subject
from events.types import (
    AgentRegistered,
    AuctionOpened,
    BidSubmitted,
    PoolCreated,
    TaskClaimed,
    TaskSubmitted,
)

__all__ = ["Collector", "EventLogContract", "collect", "task_event"]

WAIT_SEC = 10.0


def task_event(task_id: str | None = None, **extra: Any) -> TaskSubmitted:
    """Return a ``TaskSubmitted`` event for a fresh (or the given) task id."""
    tid = task_id or uuid.uuid4().hex
    return TaskSubmitted(task={"id": tid, "objective": "test", **extra})


def claim_event(task_id: str, agent_id: str) -> TaskClaimed:
    return TaskClaimed(task_id=task_id, agent_id=agent_id, claimed_at=1.0)


async def collect(log: EventLog, **kwargs: Any) -> list[RecordedEvent]:
    """Return every record ``log.read(**kwargs)`` yields."""
    return [r async for r in log.read(**kwargs)]


class Collector:
    """A subscription handler that records events and wakes waiters at a count."""

    def __init__(self) -> None:
        self.records: list[RecordedEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, recorded: RecordedEvent) -> None:
        self.records.append(recorded)
        self._changed.set()

    @property
    def sequences(self) -> list[int]:
        return [r.sequence for r in self.records]

    async def wait_for(self, count: int, timeout: float = WAIT_SEC) -> None:  # noqa: ASYNC109
        """Wait until at least ``count`` events arrived; ConvergeTimeoutError otherwise."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.records) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise ConvergeTimeoutError(
                f"expected {count} events within {timeout}s, got {len(self.records)}"
            ) from None


class EventLogContract:
    """Behaviour every :class:`~events.log.EventLog` backend must show.

    Subclass it in a test module that provides the ``event_log`` fixture.
    """

    # -- append and sequences -------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_append_returns_stream_sequence(self, event_log: EventLog) -> None:
        events = [task_event() for _ in range(3)]
        records = [
            await event_log.append(e, subject=subject("tasks", e.task["id"])) for e in events
        ]
        assert [r.sequence for r in records] == [1, 2, 3]
        assert all(r.stream == "tasks" for r in records)
        assert records[0].subject == f"tasks.{events[0].task['id']}"
        assert [r.event for r in records] == events
        assert all(isinstance(r.time, float) and r.time > 0 for r in records)

    @pytest.mark.asyncio
    async def test_sequences_are_per_stream(self, event_log: EventLog) -> None:
        t1 = await event_log.append(task_event(), subject="tasks.a")
        p1 = await event_log.append(PoolCreated(pool={"id": "p"}), subject="pools.p")
        t2 = await event_log.append(task_event(), subject="tasks.b")
        assert (t1.sequence, p1.sequence, t2.sequence) == (1, 1, 2)
        assert p1.stream == "pools"
        assert await event_log.last_sequence(stream="tasks") == 2
        assert await event_log.last_sequence(stream="pools") == 1
        assert await event_log.last_sequence(stream="agents") == 0

    @pytest.mark.asyncio
    async def test_read_back_equals_appended(self, event_log: EventLog) -> None:
        original = BidSubmitted(
            auction_id="a1",
            agent_id="ag",
            amount=2.5,
            content={"nested": [1, "two", None, {"x": 1.5}]},
            actor="ag",
            correlation_id="corr",
            causation_id="cause",
        )
        rec = await event_log.append(original, subject=subject("coord", "auction", "a1"))
        [back] = await collect(event_log, stream="coord")
        # ``time`` of an append is the writer's clock at the ack; reads give the store's
        assert (back.stream, back.subject, back.sequence) == (rec.stream, rec.subject, rec.sequence)
        assert back.event == original
        assert type(back.event) is BidSubmitted

    @pytest.mark.asyncio
    async def test_last_sequence_of_subject(self, event_log: EventLog) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        await event_log.append(task_event(), subject="tasks.b")
        await event_log.append(task_event(), subject="tasks.a")
        assert await event_log.last_sequence(stream="tasks", subject="tasks.a") == 3
        assert await event_log.last_sequence(stream="tasks", subject="tasks.b") == 2
        assert await event_log.last_sequence(stream="tasks", subject="tasks.c") == 0

    @pytest.mark.asyncio
    async def test_encoded_ids_round_trip(self, event_log: EventLog) -> None:
        odd = "id with.dots*and>wild cards/ü"
        subj = subject("tasks", odd)
        rec = await event_log.append(task_event(odd), subject=subj)
        assert rec.subject == subj
        [back] = await collect(event_log, subject=subj)
        assert back.event.task["id"] == odd  # type: ignore[attr-defined]

    # -- optimistic concurrency --------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_expected_version_zero_means_empty(self, event_log: EventLog) -> None:
        rec = await event_log.append(task_event(), subject="tasks.x", expected_version=0)
        assert rec.sequence == 1
        with pytest.raises(ConcurrencyError) as info:
            await event_log.append(task_event(), subject="tasks.x", expected_version=0)
        assert info.value.subject == "tasks.x"
        assert info.value.expected == 0

    @pytest.mark.asyncio
    async def test_expected_version_is_the_subjects_last_stream_sequence(
        self, event_log: EventLog
    ) -> None:
        a1 = await event_log.append(task_event(), subject="tasks.a", expected_version=0)
        b1 = await event_log.append(task_event(), subject="tasks.b", expected_version=0)
        a2 = await event_log.append(
            claim_event("a", "x"), subject="tasks.a", expected_version=a1.sequence
        )
        assert (a1.sequence, b1.sequence, a2.sequence) == (1, 2, 3)
        with pytest.raises(ConcurrencyError) as info:
            await event_log.append(claim_event("a", "y"), subject="tasks.a", expected_version=1)
        assert info.value.expected == 1
        assert info.value.actual in (3, None)
        b2 = await event_log.append(claim_event("b", "y"), subject="tasks.b", expected_version=2)
        assert b2.sequence == 4

    @pytest.mark.asyncio
    async def test_no_expected_version_means_no_check(self, event_log: EventLog) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        rec = await event_log.append(task_event(), subject="tasks.a", expected_version=None)
        assert rec.sequence == 2

    @pytest.mark.asyncio
    async def test_conflict_stores_nothing(self, event_log: EventLog) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        with pytest.raises(ConcurrencyError):
            await event_log.append(task_event(), subject="tasks.a", expected_version=5)
        assert len(await collect(event_log, stream="tasks")) == 1

    @pytest.mark.asyncio
    async def test_concurrent_appenders_one_winner_per_round(self, event_log: EventLog) -> None:
        contenders, rounds = 8, 5
        for round_no in range(rounds):
            version = await event_log.last_sequence(stream="tasks", subject="tasks.race")
            outcomes = await asyncio.gather(
                *(
                    event_log.append(
                        claim_event("race", f"agent-{round_no}-{i}"),
                        subject="tasks.race",
                        expected_version=version,
                    )
                    for i in range(contenders)
                ),
                return_exceptions=True,
            )
            wins = [o for o in outcomes if isinstance(o, RecordedEvent)]
            losses = [o for o in outcomes if isinstance(o, ConcurrencyError)]
            assert len(wins) == 1, outcomes
            assert len(losses) == contenders - 1, outcomes
        assert len(await collect(event_log, subject="tasks.race")) == rounds

    # -- idempotence -------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_same_event_id_is_stored_once(self, event_log: EventLog) -> None:
        event = task_event()
        first = await event_log.append(event, subject="tasks.a")
        again = await event_log.append(event, subject="tasks.a")
        assert again.sequence == first.sequence
        assert again.event == event
        assert again == first  # the original record, whatever clock stamped each result
        assert await collect(event_log, stream="tasks") == [first]

    @pytest.mark.asyncio
    async def test_retry_with_the_original_expected_version_returns_original(
        self, event_log: EventLog
    ) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        event = claim_event("a", "w")
        first = await event_log.append(event, subject="tasks.a", expected_version=1)
        again = await event_log.append(event, subject="tasks.a", expected_version=1)
        assert again.sequence == first.sequence == 2
        assert again == first
        assert len(await collect(event_log, stream="tasks")) == 2

    @pytest.mark.asyncio
    async def test_retry_after_a_later_event_returns_original(self, event_log: EventLog) -> None:
        event = task_event()
        first = await event_log.append(event, subject="tasks.a", expected_version=0)
        await event_log.append(claim_event("a", "w"), subject="tasks.a", expected_version=1)
        again = await event_log.append(event, subject="tasks.a", expected_version=0)
        assert again.sequence == first.sequence

    @pytest.mark.asyncio
    async def test_dedupe_is_per_stream(self, event_log: EventLog) -> None:
        event = task_event()
        first = await event_log.append(event, subject="tasks.a")
        other_subject = await event_log.append(event, subject="tasks.b")
        assert (other_subject.subject, other_subject.sequence) == ("tasks.a", first.sequence)
        other_stream = await event_log.append(event, subject="pools.a")
        assert (other_stream.stream, other_stream.sequence) == ("pools", 1)
        assert len(await collect(event_log, stream="tasks")) == 1

    # -- append_many ---------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_append_many_in_order(self, event_log: EventLog) -> None:
        items: list[tuple[Event, str, int | None]] = [
            (task_event("m"), "tasks.m", 0),
            (claim_event("m", "a"), "tasks.m", 1),
            (task_event(), "tasks.n", None),
            (PoolCreated(pool={"id": "p"}), "pools.p", 0),
        ]
        records = await event_log.append_many(items)
        assert [(r.stream, r.sequence) for r in records] == [
            ("tasks", 1),
            ("tasks", 2),
            ("tasks", 3),
            ("pools", 1),
        ]
        assert [r.event for r in records] == [i[0] for i in items]
        pairs = await event_log.append_many([(task_event(), "tasks.o")])
        assert pairs[0].sequence == 4
        assert await event_log.append_many([]) == []

    @pytest.mark.asyncio
    async def test_append_many_raises_conflict_after_storing_the_rest(
        self, event_log: EventLog
    ) -> None:
        with pytest.raises(ConcurrencyError):
            await event_log.append_many(
                [
                    (task_event(), "tasks.a", 0),
                    (task_event(), "tasks.a", 0),  # loses: tasks.a is at 1 by then
                    (task_event(), "tasks.b", 0),
                ]
            )
        stored = await collect(event_log, stream="tasks")
        assert [r.subject for r in stored] == ["tasks.a", "tasks.b"]

    @pytest.mark.asyncio
    async def test_append_many_dedupes_retries(self, event_log: EventLog) -> None:
        events = [task_event() for _ in range(5)]
        first = await event_log.append_many([(e, "tasks.d") for e in events])
        again = await event_log.append_many([(e, "tasks.d") for e in events])
        assert [r.sequence for r in again] == [r.sequence for r in first]
        assert len(await collect(event_log, stream="tasks")) == 5

    # -- reads ---------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_read_ranges_and_filters(self, event_log: EventLog) -> None:
        for i in range(10):
            await event_log.append(task_event(), subject=f"tasks.t{i % 3}")
        assert [r.sequence for r in await collect(event_log, stream="tasks")] == list(range(1, 11))
        ranged = await collect(event_log, stream="tasks", start_seq=4, end_seq=7)
        assert [r.sequence for r in ranged] == [4, 5, 6, 7]
        only = await collect(event_log, subject="tasks.t1")
        assert [r.sequence for r in only] == [2, 5, 8]
        assert all(r.subject == "tasks.t1" for r in only)
        wild = await collect(event_log, subject="tasks.*", start_seq=9)
        assert [r.sequence for r in wild] == [9, 10]
        tail = await collect(event_log, subject="tasks.>", start_seq=10)
        assert [r.sequence for r in tail] == [10]
        assert await collect(event_log, stream="tasks", start_seq=11) == []
        assert await collect(event_log, stream="agents") == []

    @pytest.mark.asyncio
    async def test_read_nested_subjects(self, event_log: EventLog) -> None:
        await event_log.append(
            AuctionOpened(auction_id="a", auction_type="x"), subject="coord.auction.a"
        )
        await event_log.append(
            BidSubmitted(auction_id="a", agent_id="g", amount=1.0), subject="coord.auction.a"
        )
        await event_log.append(
            AuctionOpened(auction_id="b", auction_type="x"), subject="coord.auction.b"
        )
        await event_log.append(AgentRegistered(descriptor={"id": "g"}), subject="coord.vote.v")
        auctions = await collect(event_log, subject="coord.auction.*")
        assert [r.sequence for r in auctions] == [1, 2, 3]
        assert [r.sequence for r in await collect(event_log, subject="coord.>")] == [1, 2, 3, 4]
        assert await event_log.last_sequence(stream="coord", subject="coord.auction.a") == 2
        assert await event_log.last_sequence(stream="coord", subject="coord.auction.*") == 3
        assert await event_log.last_sequence(stream="coord", subject="coord.>") == 4
        assert await event_log.last_sequence(stream="coord", subject="coord.bid.*") == 0
        seen = Collector()
        async with await event_log.subscribe(
            seen, stream="coord", subject="coord.auction.*", start_seq=2
        ) as sub:
            await sub.wait_caught_up(WAIT_SEC)
            assert seen.sequences == [2, 3]

    @pytest.mark.asyncio
    async def test_read_every_stream(self, event_log: EventLog) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        await event_log.append(PoolCreated(pool={"id": "p"}), subject="pools.p")
        await event_log.append(task_event(), subject="tasks.b")
        records = await collect(event_log)
        by_stream: dict[str, list[int]] = {}
        for r in records:
            by_stream.setdefault(r.stream, []).append(r.sequence)
        assert by_stream == {"tasks": [1, 2], "pools": [1]}
        streams_in_order = [r.stream for r in records]
        # one stream after another, never interleaved
        assert streams_in_order in (["pools", "tasks", "tasks"], ["tasks", "tasks", "pools"])

    @pytest.mark.asyncio
    async def test_read_stops_at_the_end_as_of_the_call(self, event_log: EventLog) -> None:
        for _ in range(3):
            await event_log.append(task_event(), subject="tasks.a")
        seen: list[int] = []
        async for r in event_log.read(stream="tasks"):
            seen.append(r.sequence)
            if len(seen) == 1:
                await event_log.append(task_event(), subject="tasks.a")
        assert seen == [1, 2, 3]

    @pytest.mark.asyncio
    async def test_read_by_time(self, event_log: EventLog) -> None:
        for _ in range(6):
            await event_log.append(task_event(), subject="tasks.a")
        everything = await collect(event_log, stream="tasks")
        times = [r.time for r in everything]
        assert times == sorted(times)
        t_from, t_to = times[2], times[4]
        expect_from = [r.sequence for r in everything if r.time >= t_from]
        got_from = await collect(event_log, stream="tasks", start_time=t_from)
        assert [r.sequence for r in got_from] == expect_from
        expect_window = [r.sequence for r in everything if t_from <= r.time <= t_to]
        got_window = await collect(event_log, stream="tasks", start_time=t_from, end_time=t_to)
        assert [r.sequence for r in got_window] == expect_window
        expect_until = [r.sequence for r in everything if r.time <= t_to]
        got_until = await collect(event_log, stream="tasks", end_time=t_to)
        assert [r.sequence for r in got_until] == expect_until
        assert await collect(event_log, stream="tasks", start_time=times[-1] + 60) == []

    # -- subscriptions -------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_subscribe_catches_up_then_follows(self, event_log: EventLog) -> None:
        for _ in range(3):
            await event_log.append(task_event(), subject="tasks.a")
        seen = Collector()
        sub = await event_log.subscribe(seen, stream="tasks")
        async with sub:
            await sub.wait_caught_up(WAIT_SEC)
            assert sub.caught_up
            assert seen.sequences == [1, 2, 3]
            await event_log.append(task_event(), subject="tasks.b")
            await event_log.append_many([(task_event(), "tasks.c"), (task_event(), "tasks.a")])
            await seen.wait_for(6)
            assert seen.sequences == [1, 2, 3, 4, 5, 6]
        await event_log.append(task_event(), subject="tasks.a")
        assert seen.sequences == [1, 2, 3, 4, 5, 6]

    @pytest.mark.asyncio
    async def test_subscribe_on_empty_stream_is_caught_up(self, event_log: EventLog) -> None:
        seen = Collector()
        sub = await event_log.subscribe(seen, stream="tasks")
        try:
            await sub.wait_caught_up(WAIT_SEC)
            await event_log.append(task_event(), subject="tasks.a")
            await seen.wait_for(1)
            assert seen.sequences == [1]
        finally:
            await sub.stop()

    @pytest.mark.asyncio
    async def test_subscribe_from_sequence_with_filter(self, event_log: EventLog) -> None:
        for i in range(6):
            await event_log.append(task_event(), subject=f"tasks.t{i % 2}")
        seen = Collector()
        sub = await event_log.subscribe(seen, stream="tasks", subject="tasks.t0", start_seq=2)
        try:
            await sub.wait_caught_up(WAIT_SEC)
            assert seen.sequences == [3, 5]
            await event_log.append(task_event(), subject="tasks.t1")
            await event_log.append(task_event(), subject="tasks.t0")
            await seen.wait_for(3)
            assert seen.sequences == [3, 5, 8]
        finally:
            await sub.stop()

    @pytest.mark.asyncio
    async def test_subscribe_start_beyond_end(self, event_log: EventLog) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        seen = Collector()
        sub = await event_log.subscribe(seen, stream="tasks", start_seq=5)
        try:
            await sub.wait_caught_up(WAIT_SEC)
            assert seen.records == []
        finally:
            await sub.stop()

    @pytest.mark.asyncio
    async def test_two_subscribers_see_the_same_order(self, event_log: EventLog) -> None:
        a, b = Collector(), Collector()
        sub_a = await event_log.subscribe(a, stream="tasks")
        sub_b = await event_log.subscribe(b, stream="tasks")
        try:
            await asyncio.gather(
                *(event_log.append(task_event(), subject=f"tasks.s{i}") for i in range(20))
            )
            await a.wait_for(20)
            await b.wait_for(20)
            assert a.sequences == b.sequences == list(range(1, 21))
        finally:
            await sub_a.stop()
            await sub_b.stop()

    @pytest.mark.asyncio
    async def test_handler_failure_surfaces_on_stop(self, event_log: EventLog) -> None:
        calls: list[int] = []

        async def failing(recorded: RecordedEvent) -> None:
            calls.append(recorded.sequence)
            raise RuntimeError("handler broke")

        await event_log.append(task_event(), subject="tasks.a")
        await event_log.append(task_event(), subject="tasks.a")
        sub = await event_log.subscribe(failing, stream="tasks")
        with pytest.raises(RuntimeError, match="handler broke"):
            await sub.wait_caught_up(WAIT_SEC)
        with pytest.raises(RuntimeError, match="handler broke"):
            await sub.stop()
        assert calls == [1]
        await sub.stop()  # idempotent once the error was reported

    @pytest.mark.asyncio
    async def test_stop_is_idempotent_and_ends_delivery(self, event_log: EventLog) -> None:
        seen = Collector()
        sub = await event_log.subscribe(seen, stream="tasks")
        await sub.wait_caught_up(WAIT_SEC)
        await event_log.append(task_event(), subject="tasks.a")
        await seen.wait_for(1)
        await sub.stop()
        await sub.stop()
        assert not sub.is_active
        await event_log.append(task_event(), subject="tasks.a")
        probe = Collector()  # a later subscriber sees the event, the stopped one does not
        async with await event_log.subscribe(probe, stream="tasks") as live:
            await live.wait_caught_up(WAIT_SEC)
            assert probe.sequences == [1, 2]
        assert seen.sequences == [1]

    # -- bad input -----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_bad_subjects_are_config_errors(self, event_log: EventLog) -> None:
        for bad in (
            "",
            "tasks",
            "tasks.",
            "tasks.a b",
            "tasks.*",
            "tasks.>",
            "Tasks.a",
            "tasks..a",
        ):
            with pytest.raises(ConfigError):
                await event_log.append(task_event(), subject=bad)
        with pytest.raises(ConfigError):
            await event_log.append(task_event(), subject="tasks.a", expected_version=-1)
        with pytest.raises(ConfigError):
            await collect(event_log, stream="tasks", subject="pools.a")
        assert await collect(event_log) == []

    @pytest.mark.asyncio
    async def test_non_json_payload_is_a_decode_error(self, event_log: EventLog) -> None:
        with pytest.raises(DecodeError, match="JSON"):
            await event_log.append(task_event(bad=object()), subject="tasks.a")
        assert await event_log.last_sequence(stream="tasks") == 0

    @pytest.mark.asyncio
    async def test_bad_item_fails_the_whole_batch(self, event_log: EventLog) -> None:
        with pytest.raises(ConfigError):
            await event_log.append_many([(task_event(), "tasks.a"), (task_event(), "tasks a")])
        with pytest.raises(DecodeError):
            await event_log.append_many(
                [(task_event(), "tasks.a"), (task_event(bad=object()), "tasks.b")]
            )
        with pytest.raises(ConfigError):
            await event_log.append_many([(task_event(), "tasks.a", -3)])
        with pytest.raises(ConfigError):
            await event_log.append_many([("not an event", "tasks.a")])  # type: ignore[list-item]
        assert await event_log.last_sequence(stream="tasks") == 0

    @pytest.mark.asyncio
    async def test_unregistered_event_types_are_refused(self, event_log: EventLog) -> None:
        class Unregistered(Event):
            type: ClassVar[str] = "test.unregistered"

        with pytest.raises(ConfigError, match="register"):
            await event_log.append(Unregistered(), subject="tasks.a")

    @pytest.mark.asyncio
    async def test_skipped_events_starts_at_zero(self, event_log: EventLog) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        await collect(event_log)
        assert event_log.skipped_events == 0

    # -- closing -------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_a_closed_log_refuses_work_until_started(self, event_log: EventLog) -> None:
        await event_log.append(task_event(), subject="tasks.a")
        await event_log.close()
        await event_log.close()  # idempotent
        fix = r"closed; call start\(\)"
        with pytest.raises(ClosedError, match=fix):
            await event_log.append(task_event(), subject="tasks.a")
        with pytest.raises(ClosedError, match=fix):
            await event_log.append_many([(task_event(), "tasks.a")])
        with pytest.raises(ClosedError, match=fix):
            await collect(event_log, stream="tasks")
        with pytest.raises(ClosedError, match=fix):
            await collect(event_log, subject="tasks.a")
        with pytest.raises(ClosedError, match=fix):
            await collect(event_log)
        with pytest.raises(ClosedError, match=fix):
            await event_log.subscribe(Collector(), stream="tasks")
        with pytest.raises(ClosedError, match=fix):
            await event_log.last_sequence(stream="tasks")
        with pytest.raises(ClosedError, match=fix):
            await event_log.last_sequence(stream="tasks", subject="tasks.a")
        await event_log.start()  # open again: the events are still there
        assert [r.sequence for r in await collect(event_log, stream="tasks")] == [1]
        assert (await event_log.append(task_event(), subject="tasks.a")).sequence == 2
        assert await event_log.last_sequence(stream="tasks") == 2

    @pytest.mark.asyncio
    async def test_stop_ends_reads_and_subscriptions(self, event_log: EventLog) -> None:
        for _ in range(3):
            await event_log.append(task_event(), subject="tasks.a")
        seen = Collector()
        sub = await event_log.subscribe(seen, stream="tasks")
        await sub.wait_caught_up(WAIT_SEC)
        reader = event_log.read(stream="tasks")
        first = await anext(reader)
        assert first.sequence == 1
        await event_log.stop()
        with pytest.raises(ClosedError):
            async for _ in reader:
                pass
        assert not sub.is_active
        await event_log.start()
        await event_log.append(task_event(), subject="tasks.a")
        probe = Collector()
        async with await event_log.subscribe(probe, stream="tasks") as live:
            await live.wait_caught_up(WAIT_SEC)
            assert probe.sequences == [1, 2, 3, 4]
        assert seen.sequences == [1, 2, 3]  # the stopped subscription got nothing more

    @pytest.mark.asyncio
    async def test_waiting_on_a_subscription_of_a_closed_log_raises(
        self, event_log: EventLog
    ) -> None:
        for _ in range(3):
            await event_log.append(task_event(), subject="tasks.a")
        release = asyncio.Event()

        async def slow(recorded: RecordedEvent) -> None:
            async with asyncio.timeout(WAIT_SEC):
                await release.wait()

        sub = await event_log.subscribe(slow, stream="tasks")
        try:
            await event_log.close()
            with pytest.raises(ClosedError, match=r"start\(\)"):
                await sub.wait_caught_up(WAIT_SEC)
        finally:
            release.set()
