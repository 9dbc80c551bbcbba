"""A three-node JetStream cluster on loopback: R3 streams survive the loss of one node."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import nats.errors
import pytest

import events
from converge.errors import ConvergeTimeoutError, EventLogError
from events.jetstream import JetStreamEventLog
from events.server import EmbeddedNatsServer
from events.subjects import KNOWN_KINDS, stream_name
from events.testing import collect, task_event
from nats_containers import free_ports

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def _connect_when_ready(urls: list[str]) -> JetStreamEventLog:
    config = events.BrokerConfig(servers=urls)
    last: Exception | None = None
    for _ in range(60):  # the cluster elects its meta leader after the nodes start
        try:
            return await JetStreamEventLog.connect(
                config=config, namespace="cluster", replicas=3, api_timeout_sec=2.0
            )
        except (ConvergeTimeoutError, EventLogError) as exc:
            last = exc
            await asyncio.sleep(0.5)
    raise AssertionError(f"the cluster never became ready: {last}")


async def _wait_for_leaders(log: JetStreamEventLog, stream: str, lost: str) -> None:
    """Wait until the cluster has a meta leader and ``stream`` a leader other than ``lost``.

    Losing a node may cost the cluster its meta leader and the stream its leader; until
    the survivors elect new ones (seconds on a loaded machine) JetStream answers nothing.
    """
    assert log.connection is not None
    jsm = log.connection.jsm(timeout=2.0)
    async with asyncio.timeout(60):
        while True:
            try:
                await jsm.account_info()  # answered by the meta leader only
                info = await jsm.stream_info(stream)
                if info.cluster is not None and info.cluster.leader not in (None, lost):
                    return
            except nats.errors.Error:
                pass
            await asyncio.sleep(0.2)


def _cluster(tmp_path: Path) -> list[EmbeddedNatsServer]:
    """Three nats-servers routed to each other on loopback (not started)."""
    cluster_ports = free_ports(3)
    servers = []
    for i, port in enumerate(cluster_ports):
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports if p != port)
        args = ["--server_name", f"n{i}", "--cluster_name", "c1"]
        args += ["--cluster", f"nats://127.0.0.1:{port}", "--routes", routes]
        servers.append(
            EmbeddedNatsServer(data_dir=tmp_path / f"n{i}", extra_args=args, start_timeout_sec=20)
        )
    return servers


@pytest.mark.asyncio
async def test_r3_streams_survive_a_node_loss(tmp_path: Path) -> None:
    servers = _cluster(tmp_path)
    try:
        await asyncio.gather(*(s.start() for s in servers))
        log = await _connect_when_ready([s.url for s in servers])
        try:
            info = await log.connection.jsm().stream_info("CLUSTER_TASKS")  # type: ignore[union-attr]
            assert info.config.num_replicas == 3
            batch = [(task_event(f"t{i}"), f"tasks.t{i}", 0) for i in range(50)]
            assert [r.sequence for r in await log.append_many(batch)] == list(range(1, 51))
            await servers[2].stop()
            await _wait_for_leaders(log, "CLUSTER_TASKS", lost="n2")
            # The short timeout only served to poll the election; after a failover a
            # loaded machine can take longer than 2 s to create a read's R3 consumer.
            log.api_timeout_sec = 10.0
            for i in range(50, 60):
                await log.append(task_event(f"t{i}"), subject=f"tasks.t{i}", expected_version=0)
            with pytest.raises(events.ConcurrencyError):
                await log.append(task_event(), subject="tasks.t0", expected_version=0)
            assert [r.sequence for r in await collect(log, stream="tasks")] == list(range(1, 61))
        finally:
            await log.close()
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.asyncio
async def test_clients_never_change_an_r3_streams_replicas(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    servers = _cluster(tmp_path)
    try:
        await asyncio.gather(*(s.start() for s in servers))
        urls = [s.url for s in servers]
        creator = await _connect_when_ready(urls)  # replicas=3: creates the R3 streams
        await creator.append(task_event("t0"), subject="tasks.t0")
        await creator.close()
        config = events.BrokerConfig(servers=urls)

        inspector = await JetStreamEventLog.connect(
            config=config, namespace="cluster", create_streams=False, api_timeout_sec=10.0
        )
        try:
            assert [r.sequence for r in await collect(inspector, stream="tasks")] == [1]
            assert (await inspector.stream_info("tasks")).replicas == 3
        finally:
            await inspector.close()

        with caplog.at_level(logging.WARNING, logger="events.jetstream"):
            writer = await JetStreamEventLog.connect(
                config=config, namespace="cluster", replicas=1, api_timeout_sec=10.0
            )
        try:
            await writer.append(task_event("t1"), subject="tasks.t1")
            statuses = await writer.streams_info()
        finally:
            await writer.close()
        assert {s.name: s.replicas for s in statuses} == {
            stream_name("cluster", kind): 3 for kind in KNOWN_KINDS
        }
        drifts = [
            r.getMessage() for r in caplog.records if "differs from this client" in r.getMessage()
        ]
        assert len(drifts) == len(KNOWN_KINDS)  # one warning per stream
        assert all("replicas 3 -> 1" in message for message in drifts)
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("retry_sec", [30.0, 0.0], ids=["ride-out", "no-retry"])
async def test_reads_ride_out_the_election_after_the_stream_leader_is_killed(
    tmp_path: Path, retry_sec: float
) -> None:
    """Stream state, lookups and reads issued the moment the stream leader dies succeed
    once the survivors elect a new one: each API call is retried for ``api_retry_sec``.
    With no retries (0) the same calls fail with a timeout, so the election is real."""
    servers = _cluster(tmp_path)
    try:
        await asyncio.gather(*(s.start() for s in servers))
        log = await _connect_when_ready([s.url for s in servers])
        try:
            batch = [(task_event(f"t{i}"), f"tasks.t{i}", 0) for i in range(20)]
            await log.append_many(batch)
            info = await log.connection.jsm().stream_info("CLUSTER_TASKS")  # type: ignore[union-attr]
            assert info.cluster is not None and info.cluster.leader is not None
            leader = servers[int(info.cluster.leader.removeprefix("n"))]
            log.api_retry_sec = retry_sec
            await leader.kill()  # SIGKILL: no leadership handed over
            if retry_sec == 0:
                with pytest.raises((ConvergeTimeoutError, EventLogError)):
                    await log.last_sequence(stream="tasks")
                return
            assert await log.last_sequence(stream="tasks") == 20
            assert (await log.stream_info("tasks")).messages == 20
            records = await collect(log, stream="tasks")
            assert [r.sequence for r in records] == list(range(1, 21))
        finally:
            await log.close()
    finally:
        for server in servers:
            await server.stop()
