"""TrustModel: clamping, TrustUpdated events, rebuild from the stream, races."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from converge.errors import ClosedError, ConfigError
from converge.policy.trust import TrustModel
from events import AgentRegistered, MemoryEventLog, TrustUpdated, subject


@pytest_asyncio.fixture
async def log() -> AsyncIterator[MemoryEventLog]:
    async with MemoryEventLog() as event_log:
        yield event_log


@pytest.mark.asyncio
async def test_in_memory_scores_clamp() -> None:
    async with TrustModel() as tm:
        assert tm.get_trust("a1") == 0.5
        assert await tm.update_trust("a1", 0.1) == pytest.approx(0.6)
        assert tm.get_trust("a1") == pytest.approx(0.6)
        assert await tm.update_trust("a1", 1.0) == 1.0
        assert await tm.update_trust("a1", -2.0) == 0.0
        assert tm.get_trust("a1") == 0.0
        assert tm.scores == {"a1": 0.0}


@pytest.mark.asyncio
async def test_default_trust_is_configurable() -> None:
    tm = TrustModel(default_trust=0.2)
    assert tm.get_trust("x") == 0.2
    assert await tm.update_trust("x", 0.1) == pytest.approx(0.3)  # starts itself


@pytest.mark.asyncio
async def test_update_appends_trust_updated_event(log: MemoryEventLog) -> None:
    async with TrustModel(log, actor="judge") as tm:
        assert await tm.update_trust("agent.with/odd id", 0.25) == 0.75
    records = [r async for r in log.read(stream="agents")]
    assert len(records) == 1
    event = records[0].event
    assert isinstance(event, TrustUpdated)
    assert event.agent_id == "agent.with/odd id"
    assert event.trust == 0.75
    assert event.delta == 0.25
    assert event.actor == "judge"
    assert records[0].subject == subject("agents", "agent.with/odd id")


@pytest.mark.asyncio
async def test_rebuilds_from_stream(log: MemoryEventLog) -> None:
    async with TrustModel(log) as tm:
        await tm.update_trust("a1", 0.3)
        await tm.update_trust("a2", -0.4)
        await tm.update_trust("a1", -0.1)
    async with TrustModel(log) as rebuilt:
        assert rebuilt.get_trust("a1") == pytest.approx(0.7)
        assert rebuilt.get_trust("a2") == pytest.approx(0.1)
        assert rebuilt.get_trust("a3") == 0.5
        assert rebuilt.position == 3


@pytest.mark.asyncio
async def test_follows_other_writers(log: MemoryEventLog) -> None:
    async with TrustModel(log) as reader, TrustModel(log) as writer:
        await writer.update_trust("a1", 0.2)
        await reader.sync()
        assert reader.get_trust("a1") == pytest.approx(0.7)


@pytest.mark.asyncio
async def test_stale_writer_retries_and_loses_no_update(log: MemoryEventLog) -> None:
    async with TrustModel(log) as first, TrustModel(log) as second:
        assert await first.update_trust("a1", 0.1) == pytest.approx(0.6)
        # second may not have seen that event yet: its append must not overwrite it
        assert await second.update_trust("a1", 0.1) == pytest.approx(0.7)
        await first.sync()
        assert first.get_trust("a1") == pytest.approx(0.7)


@pytest.mark.asyncio
async def test_direct_append_then_stale_update(log: MemoryEventLog) -> None:
    async with TrustModel(log) as tm:
        await log.append(TrustUpdated(agent_id="a1", trust=0.9), subject=subject("agents", "a1"))
        assert await tm.update_trust("a1", -0.1) == pytest.approx(0.8)


@pytest.mark.asyncio
async def test_other_events_on_agent_subject_are_tolerated(log: MemoryEventLog) -> None:
    await log.append(
        AgentRegistered(descriptor={"id": "a1"}),
        subject=subject("agents", "a1"),
        expected_version=0,
    )
    async with TrustModel(log) as tm:
        assert tm.get_trust("a1") == 0.5
        assert await tm.update_trust("a1", 0.1) == pytest.approx(0.6)


@pytest.mark.asyncio
async def test_stored_trust_is_clamped_on_read(log: MemoryEventLog) -> None:
    await log.append(TrustUpdated(agent_id="a1", trust=7.0), subject=subject("agents", "a1"))
    async with TrustModel(log) as tm:
        assert tm.get_trust("a1") == 1.0


@pytest.mark.asyncio
async def test_lifecycle() -> None:
    tm = TrustModel()
    await tm.start()
    await tm.start()
    assert tm.is_started
    await tm.stop()
    await tm.stop()
    with pytest.raises(ClosedError, match="stopped"):
        await tm.update_trust("a", 0.1)
    with pytest.raises(ClosedError):
        await tm.start()
    assert tm.to_spec() == {"name": "trust", "params": {"default_trust": 0.5}}


@pytest.mark.parametrize(
    ("agent_id", "delta", "match"),
    [
        ("", 0.1, "agent_id"),
        (None, 0.1, "agent_id"),
        ("a", float("nan"), "delta"),
        ("a", "0.1", "delta"),
        ("a", True, "delta"),
    ],
)
@pytest.mark.asyncio
async def test_bad_updates(agent_id: Any, delta: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        await TrustModel().update_trust(agent_id, delta)


@pytest.mark.parametrize(
    "kwargs",
    [{"default_trust": 1.5}, {"default_trust": "x"}, {"max_retries": -1}, {"timeout_sec": 0}],
)
def test_bad_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TrustModel(**kwargs)


@pytest.mark.nats
@pytest.mark.asyncio
async def test_trust_on_jetstream_across_two_logs(nats_url: str, namespace: str) -> None:
    from events import JetStreamEventLog

    first_log = await JetStreamEventLog.connect(nats_url, namespace=namespace, storage="memory")
    second_log = await JetStreamEventLog.connect(nats_url, namespace=namespace, storage="memory")
    try:
        async with TrustModel(first_log) as first, TrustModel(second_log) as second:
            assert await first.update_trust("a1", 0.2) == pytest.approx(0.7)
            # second has not necessarily seen it: its append must not overwrite it
            assert await second.update_trust("a1", -0.3) == pytest.approx(0.4)
            await first.sync()
            assert first.get_trust("a1") == pytest.approx(0.4)
        async with TrustModel(second_log) as rebuilt:
            assert rebuilt.get_trust("a1") == pytest.approx(0.4)
            assert rebuilt.position == 2
    finally:
        await first_log.close()
        await second_log.close()
