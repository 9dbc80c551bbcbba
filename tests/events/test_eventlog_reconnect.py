"""After a broker restart: live subscriptions' consumers are recreated at once, and
appends and lookups lost with the old connection are sent again at once."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import warnings
from pathlib import Path

import nats.errors
import pytest

import events
from events.jetstream import JetStreamEventLog
from events.jetstream.client import connect_nats
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


LONG_SEC = 120.0  # publish and API timeouts: only a resend at the reconnect answers sooner
RESENT_WITHIN_SEC = 60.0


@pytest.mark.asyncio
async def test_an_append_and_a_lookup_lost_with_the_broker_are_sent_again_when_it_is_back(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "nats"
    server = EmbeddedNatsServer(data_dir=data_dir, start_timeout_sec=60)  # a loaded machine
    await server.start()
    port = server.port
    config = events.BrokerConfig(servers=[server.url], reconnect_time_wait_sec=0.1)
    log = await JetStreamEventLog.connect(
        config=config,
        namespace="resend",
        publish_timeout_sec=LONG_SEC,
        publish_retries=1,
        api_timeout_sec=LONG_SEC,
    )
    try:
        first = await log.append(task_event(), subject="tasks.a")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # takes the bytes, answers nothing
        # until it is stopped for sure (the server is this process's child)
        await asyncio.to_thread(os.waitid, os.P_PID, server.pid, os.WSTOPPED | os.WNOWAIT)
        append = asyncio.create_task(
            log.append(task_event(), subject="tasks.b", expected_version=0)
        )
        lookup = asyncio.create_task(log.last_sequence(stream="tasks", subject="tasks.a"))
        # Push both requests onto the socket: the frozen server never answers the PING.
        nc = log._conn.nc  # the log's own connection (its reconnect hooks are the subject)
        assert nc is not None
        with pytest.raises(nats.errors.TimeoutError):
            await nc.flush(timeout=1)
        assert not append.done() and not lookup.done()
        await server.kill()
        server = EmbeddedNatsServer(data_dir=data_dir, port=port, start_timeout_sec=60)
        await server.start()
        async with asyncio.timeout(RESENT_WITHIN_SEC):
            stored = await append
            assert await lookup == first.sequence
        assert stored.sequence == 2
        assert [r.subject async for r in log.read(stream="tasks")] == ["tasks.a", "tasks.b"]
    finally:
        await log.close()
        await server.stop()


@pytest.mark.asyncio
async def test_failed_reconnect_attempts_leave_no_socket_open(tmp_path: Path) -> None:
    """A port that accepts and hangs up at once (docker's proxy while the server behind it
    restarts): every failed attempt's socket is closed, none is left to the collector."""
    server = EmbeddedNatsServer(data_dir=tmp_path / "nats", start_timeout_sec=60)
    await server.start()
    port = server.port
    failures = 0
    enough = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        nonlocal failures
        failures += 1
        if failures >= 5:
            enough.set()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    config = events.BrokerConfig(servers=[server.url], reconnect_time_wait_sec=0.01)
    nc = await connect_nats(config, error_cb=on_error)
    proxy: asyncio.Server | None = None
    try:
        # (plain nats-py 2.16 leaks one socket per failed attempt here)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            await server.kill()
            proxy = await asyncio.start_server(hang_up, "127.0.0.1", port)
            async with asyncio.timeout(60):
                await enough.wait()
            await nc.close()
            gc.collect()
        assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    finally:
        if not nc.is_closed:
            await nc.close()
        if proxy is not None:
            proxy.close()
            await proxy.wait_closed()
        await server.stop()
