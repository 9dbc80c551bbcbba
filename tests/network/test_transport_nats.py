"""NatsTransport on a real nats-server: subjects, queue groups, durable inbox, reconnect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import ConfigError, TransportError
from converge.network.transport.nats import NatsTransport, subject_token
from events.connection import BrokerConfig
from events.server import EmbeddedNatsServer
from nats_containers import free_ports

pytestmark = pytest.mark.nats

TIMEOUT = 5.0


def test_subject_tokens_encode_odd_ids() -> None:
    assert subject_token("agent-1_x") == "agent-1_x"
    odd = subject_token("market.bids *>")
    assert odd.startswith("~") and "." not in odd and " " not in odd
    assert subject_token("a.b") != subject_token("a_b")


@pytest.mark.asyncio
async def test_subjects_follow_the_namespace(nats_url: str, namespace: str) -> None:
    transport = NatsTransport("agent.1", nats_url, namespace=namespace)
    assert transport.direct_subject("b") == f"{namespace}.msg.direct.b"
    assert transport.topic_subject("news") == f"{namespace}.msg.topic.news"
    assert transport.broadcast_subject == f"{namespace}.msg.broadcast"
    assert transport.inbox_stream == f"{namespace.upper()}_INBOX"
    with pytest.raises(ConfigError, match="namespace"):
        NatsTransport("a", nats_url, namespace="has.dots")
    with pytest.raises(ConfigError, match="servers"):
        NatsTransport("a", "no-scheme-here", namespace=namespace)


@pytest.mark.asyncio
async def test_odd_ids_and_topics_are_routable(nats_url: str, namespace: str) -> None:
    async with (
        NatsTransport("sender one", nats_url, namespace=namespace) as a,
        NatsTransport("rx.with.dots", nats_url, namespace=namespace, topics=["a.b c"]) as b,
    ):
        direct = Message("sender one", recipient="rx.with.dots")
        topical = Message("sender one", topics=(Topic("a.b c"),))
        await a.send(direct)
        await a.send(topical)
        assert [(await b.receive(TIMEOUT)).id for _ in range(2)] == [direct.id, topical.id]


@pytest.mark.asyncio
async def test_message_with_two_topics_arrives_once(nats_url: str, namespace: str) -> None:
    async with (
        NatsTransport("a", nats_url, namespace=namespace) as a,
        NatsTransport("b", nats_url, namespace=namespace, topics=["x", "y"]) as b,
    ):
        both = Message("a", topics=(Topic("x"), Topic("y")))
        fence = Message("a", recipient="b")
        await a.send(both)
        await a.send(fence)
        assert (await b.receive(TIMEOUT)).id == both.id
        assert (await b.receive(TIMEOUT)).id == fence.id


@pytest.mark.asyncio
async def test_queue_group_shares_one_agent_between_processes(
    nats_url: str, namespace: str
) -> None:
    count = 40
    async with (
        NatsTransport("a", nats_url, namespace=namespace) as a,
        NatsTransport("b", nats_url, namespace=namespace, queue_group="workers") as b1,
        NatsTransport("b", nats_url, namespace=namespace, queue_group="workers") as b2,
    ):
        sent = [Message("a", recipient="b", payload={"i": i}) for i in range(count)]
        for message in sent:
            await a.send(message)
        seen: list[str] = []

        async def drain(t: NatsTransport) -> None:
            while len(seen) < count:
                try:
                    seen.append((await t.receive(0.2)).id)
                except TimeoutError:
                    if len(seen) >= count:
                        return

        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(drain(b1), drain(b2))
        assert sorted(seen) == sorted(m.id for m in sent)
        assert b1.stats.received + b2.stats.received == count


@pytest.mark.asyncio
async def test_durable_inbox_keeps_messages_while_offline(nats_url: str, namespace: str) -> None:
    inbox = NatsTransport("b", nats_url, namespace=namespace, durable_inbox=True)
    await inbox.start()
    await inbox.stop()
    async with NatsTransport("a", nats_url, namespace=namespace) as a:
        offline = [Message("a", recipient="b", payload={"i": i}) for i in range(5)]
        for message in offline:
            await a.send(message)
        await a._flush()
        async with NatsTransport("b", nats_url, namespace=namespace, durable_inbox=True) as b:
            got = [(await b.receive(TIMEOUT)).id for _ in offline]
            assert got == [m.id for m in offline]
            live = Message("a", recipient="b", payload={"live": True})
            await a.send(live)
            assert (await b.receive(TIMEOUT)).id == live.id


@pytest.mark.slow
@pytest.mark.asyncio
async def test_reconnect_keeps_subscriptions(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    server = EmbeddedNatsServer(port=port, data_dir=tmp_path / "nats")
    url = await server.start()
    broker = BrokerConfig(servers=url, reconnect_time_wait_sec=0.1)
    try:
        async with (
            NatsTransport("a", broker, namespace="rc") as a,
            NatsTransport("b", broker, namespace="rc", topics=["news"]) as b,
        ):
            await a.send(Message("a", recipient="b"))
            await b.receive(TIMEOUT)
            await server.stop()
            await server.start()
            # Both clients reconnect on their own; keep sending until one gets through.
            got: Message | None = None
            async with asyncio.timeout(15):
                while got is None:
                    try:
                        await a.send(Message("a", topics=(Topic("news"),)))
                        got = await b.receive(0.5)
                    except (TimeoutError, TransportError):
                        continue
            assert got.topics[0].namespace == "news"
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_unreachable_server_is_a_transport_error() -> None:
    broker = BrokerConfig(servers=f"nats://127.0.0.1:{free_ports(1)[0]}", connect_timeout_sec=0.5)
    transport = NatsTransport("a", broker, start_timeout_sec=1.0)
    with pytest.raises(TransportError, match="cannot connect"):
        await transport.start()
    assert transport.state.value == "stopped"
