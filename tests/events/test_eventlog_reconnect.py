"""Live subscriptions after a broker restart: their consumers are recreated at once."""

from __future__ import annotations

from pathlib import Path

import pytest

import events
from events.jetstream import JetStreamEventLog
from events.server import EmbeddedNatsServer
from events.testing import Collector, task_event

pytestmark = pytest.mark.nats

# nats-py's own check would notice a lost consumer only after two missed heartbeats
# (a minute here); a subscription must see new events well within that.
HEARTBEAT_SEC = 30.0
SEEN_WITHIN_SEC = 15.0  # a generous bound for a loaded machine, far below the above


@pytest.mark.parametrize("kill", [True, False], ids=["kill-9", "stop"])
@pytest.mark.asyncio
async def test_a_subscription_sees_new_events_soon_after_a_broker_restart(
    tmp_path: Path, kill: bool
) -> None:
    data_dir = tmp_path / "nats"
    server = EmbeddedNatsServer(data_dir=data_dir)
    await server.start()
    port = server.port
    config = events.BrokerConfig(servers=[server.url], reconnect_time_wait_sec=0.2)
    reader = await JetStreamEventLog.connect(
        config=config, namespace="restart", idle_heartbeat_sec=HEARTBEAT_SEC
    )
    writer = await JetStreamEventLog.connect(
        config=config, namespace="restart", publish_timeout_sec=2.0, publish_retries=10
    )
    seen = Collector()
    try:
        await writer.append(task_event(), subject="tasks.a")
        sub = await reader.subscribe(seen, stream="tasks")
        await seen.wait_for(1)
        for restart in range(2):
            if kill:
                await server.kill()
            else:
                await server.stop()
            server = EmbeddedNatsServer(data_dir=data_dir, port=port)
            await server.start()
            # the writer waits for its own reconnect; the reader recovers on its own
            await writer.append(task_event(), subject=f"tasks.r{restart}")
            await seen.wait_for(2 + restart, timeout=SEEN_WITHIN_SEC)
        assert seen.sequences == [1, 2, 3]
        await sub.stop()
    finally:
        await reader.close()
        await writer.close()
        await server.stop()
