"""NatsTransport's fast path (raw deliveries, direct publishes) and its fallback, on a real server.

The contract suite runs on whichever path the installed nats-py allows; here both paths
are run explicitly, with bad input (undecodable bytes, forged signatures) and a broker
restart, and the raw routes are checked to be the ones carrying the messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import TransportError
from converge.network.identity_registry import IdentityRegistry
from converge.network.transport import nats as nats_transport
from converge.network.transport.nats import NatsTransport
from events.connection import BrokerConfig
from events.jetstream.rawroute import RawRouter
from events.server import EmbeddedNatsServer
from nats_containers import free_ports

pytestmark = [pytest.mark.nats, pytest.mark.asyncio]

TIMEOUT = 5.0


@pytest.fixture(params=["fast", "fallback"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the fast path and on nats-py's own path (router and writer refused)."""
    if request.param == "fallback":
        monkeypatch.setattr(nats_transport, "install_router", lambda nc: None)
        monkeypatch.setattr(nats_transport, "direct_write_problem", lambda nc: "refused")
    return str(request.param)


def _routes(transport: NatsTransport) -> dict[int, object]:
    router = getattr(transport._client(), "_converge_read_router", None)
    assert isinstance(router, RawRouter)
    return dict(router.routes)


@pytest_asyncio.fixture
async def raw_nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


async def test_fast_path_carries_direct_topic_and_broadcast(
    nats_url: str, namespace: str, path: str
) -> None:
    async with (
        NatsTransport("a", nats_url, namespace=namespace) as a,
        NatsTransport("b", nats_url, namespace=namespace, topics=["news"]) as b,
    ):
        assert a.fast_path is b.fast_path is (path == "fast")
        if path == "fast":
            # direct, broadcast and the topic: each subscription is routed raw
            assert len(_routes(b)) == 3
        sent = [
            Message("a", recipient="b", payload={"n": 1}),
            Message("a", topics=(Topic("news"),), payload={"n": 2}),
            Message("a", payload={"n": 3}),
        ]
        for message in sent:
            await a.send(message)
        got = [await b.receive(TIMEOUT) for _ in sent]
        assert got == sent
        assert b.stats.received == 3
        # routed deliveries skip nats-py's message handling and its counters
        assert (b._client().stats["in_msgs"] == 0) is (path == "fast")
        await b.unsubscribe("news")
        if path == "fast":
            assert len(_routes(b)) == 2


async def test_garbage_deliveries_are_counted_and_skipped(
    nats_url: str, namespace: str, path: str, raw_nc: nats.NATS
) -> None:
    async with NatsTransport("b", nats_url, namespace=namespace, topics=["news"]) as b:
        direct, topic = b.direct_subject("b"), b.topic_subject("news")
        good = Message("a", recipient="b", payload={"ok": True})
        bad = [b"", b"\xc1", b"\x93\x01\x02", Message("a").to_bytes()[:-3], b"x" * 100]
        # one publisher keeps its order: the garbage reaches b before the good message
        for data in bad:
            await raw_nc.publish(direct, data)
            await raw_nc.publish(topic, data)
        await raw_nc.publish(direct, good.to_bytes())
        assert await b.receive(TIMEOUT) == good
        assert b.stats.decode_errors == 2 * len(bad)
        assert b.stats.received == 1


async def test_forged_signatures_are_dropped_and_the_receiver_keeps_serving(
    nats_url: str, namespace: str, path: str
) -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    registry = IdentityRegistry()
    registry.register(alice)
    async with (
        NatsTransport(alice.fingerprint, nats_url, namespace=namespace) as a,
        NatsTransport("b", nats_url, namespace=namespace) as b,
    ):
        signed = Message(alice.fingerprint, recipient="b", payload={"v": 1}).sign(alice)
        tampered = dataclasses.replace(signed, payload={"v": 2}, id="other-id")
        impostor = dataclasses.replace(
            Message(alice.fingerprint, recipient="b").sign(mallory), sender=alice.fingerprint
        )
        genuine = Message(alice.fingerprint, recipient="b", payload={"v": 3}).sign(alice)
        for message in (tampered, impostor, genuine):
            await a.send(message)
        assert await b.receive_verified(registry, TIMEOUT) == genuine
        assert b.stats.dropped_unverified == 2


async def _first_through(a: NatsTransport, b: NatsTransport, message: Message) -> Message:
    """Send copies of ``message`` until one of its kind arrives (clients reconnecting)."""
    async with asyncio.timeout(15):
        while True:
            try:
                await a.send(dataclasses.replace(message, id=str(uuid.uuid4())))
                got = await b.receive(0.5)
            except (TimeoutError, TransportError):
                continue
            if got.recipient == message.recipient and got.topics == message.topics:
                return got


@pytest.mark.slow
async def test_raw_routes_survive_a_broker_restart(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    server = EmbeddedNatsServer(port=port, data_dir=tmp_path / "nats")
    url = await server.start()
    broker = BrokerConfig(servers=url, reconnect_time_wait_sec=0.1)
    try:
        async with (
            NatsTransport("a", broker, namespace="rr") as a,
            NatsTransport("b", broker, namespace="rr", topics=["news"]) as b,
        ):
            assert b.fast_path
            routes = _routes(b)
            await a.send(Message("a", recipient="b"))
            await b.receive(TIMEOUT)
            await server.stop()
            await server.start()
            # nats-py subscribes again under the same ids, so the routes still match them
            direct = await _first_through(a, b, Message("a", recipient="b"))
            topical = await _first_through(a, b, Message("a", topics=(Topic("news"),)))
            assert direct.recipient == "b" and topical.topics == (Topic("news"),)
            assert _routes(b) == routes
            assert b._client().stats["in_msgs"] == 0  # none took nats-py's own path
    finally:
        await server.stop()
