"""The transport contract: one test suite every backend must pass.

Subclass :class:`TransportContract` in a test module and provide a fixture named
``make_transports`` that returns a :data:`MakeTransports` function: given agent ids
(and optionally topic subscriptions per agent) it returns started transports that
can all reach each other, and stops them when the test ends. The factories below
build such functions for the four built-in backends; a new backend adds its own.

This module imports pytest only inside the test methods, so importing the
factories does not need it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import pytest

from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import ClosedError, TransportError
from converge.network.identity_registry import IdentityRegistry
from converge.network.transport.base import Transport
from converge.network.transport.mesh import start_mesh

__all__ = [
    "MakeTransports",
    "TransportContract",
    "local_transports",
    "nats_transports",
    "tcp_transports",
    "websocket_transports",
]

Topics = Mapping[str, Sequence[str]]
MakeTransports = Callable[[Sequence[str], Topics | None], Awaitable[list[Transport]]]
"""``await make(agent_ids, topics)`` -> started, mutually reachable transports, in order."""

RECEIVE_TIMEOUT_SEC = 5.0


@contextlib.asynccontextmanager
async def _stopping(
    build: Callable[[list[Transport]], MakeTransports],
) -> AsyncIterator[MakeTransports]:
    made: list[Transport] = []
    try:
        yield build(made)
    finally:
        for transport in made:
            await transport.stop()


def local_transports() -> contextlib.AbstractAsyncContextManager[MakeTransports]:
    """Yield a factory of :class:`LocalTransport` objects sharing a fresh registry."""
    from converge.network.transport.local import LocalTransport, LocalTransportRegistry

    registry = LocalTransportRegistry()

    def build(made: list[Transport]) -> MakeTransports:
        async def make(
            agent_ids: Sequence[str], topics: Mapping[str, Sequence[str]] | None = None
        ) -> list[Transport]:
            out: list[Transport] = []
            for agent_id in agent_ids:
                t = LocalTransport(agent_id, registry, topics=(topics or {}).get(agent_id, ()))
                made.append(t)
                await t.start()
                out.append(t)
            return out

        return make

    return _stopping(build)


def tcp_transports(**kwargs: object) -> contextlib.AbstractAsyncContextManager[MakeTransports]:
    """Yield a factory of loopback :class:`TcpTransport` objects that know each other."""
    from converge.network.transport.tcp import TcpTransport

    def build(made: list[Transport]) -> MakeTransports:
        async def make(
            agent_ids: Sequence[str], topics: Mapping[str, Sequence[str]] | None = None
        ) -> list[Transport]:
            out = [
                TcpTransport(
                    "127.0.0.1",
                    0,
                    agent_id,
                    topics=(topics or {}).get(agent_id, ()),
                    **kwargs,  # type: ignore[arg-type]
                )
                for agent_id in agent_ids
            ]
            made.extend(out)
            await start_mesh(out)
            return list(out)

        return make

    return _stopping(build)


def websocket_transports(
    **kwargs: object,
) -> contextlib.AbstractAsyncContextManager[MakeTransports]:
    """Yield a factory of loopback :class:`WebSocketTransport` objects that know each other."""
    from converge.network.transport.websocket import WebSocketTransport

    def build(made: list[Transport]) -> MakeTransports:
        async def make(
            agent_ids: Sequence[str], topics: Mapping[str, Sequence[str]] | None = None
        ) -> list[Transport]:
            out = [
                WebSocketTransport(
                    agent_id,
                    host="127.0.0.1",
                    port=0,
                    topics=(topics or {}).get(agent_id, ()),
                    **kwargs,  # type: ignore[arg-type]
                )
                for agent_id in agent_ids
            ]
            made.extend(out)
            await start_mesh(out)
            return list(out)

        return make

    return _stopping(build)


def nats_transports(
    servers: str | list[str], namespace: str, **kwargs: object
) -> contextlib.AbstractAsyncContextManager[MakeTransports]:
    """Yield a factory of :class:`NatsTransport` objects on ``servers`` under ``namespace``."""
    from converge.network.transport.nats import NatsTransport

    def build(made: list[Transport]) -> MakeTransports:
        async def make(
            agent_ids: Sequence[str], topics: Mapping[str, Sequence[str]] | None = None
        ) -> list[Transport]:
            out: list[Transport] = []
            for agent_id in agent_ids:
                t = NatsTransport(
                    agent_id,
                    servers,
                    namespace=namespace,
                    topics=(topics or {}).get(agent_id, ()),
                    **kwargs,  # type: ignore[arg-type]
                )
                made.append(t)
                await t.start()
                out.append(t)
            return out

        return make

    return _stopping(build)


def _signed(identity: Identity, **fields: object) -> Message:
    return Message(sender=identity.fingerprint, **fields).sign(identity)  # type: ignore[arg-type]


async def _drain_ids(transport: Transport, count: int) -> list[str]:
    return [(await transport.receive(RECEIVE_TIMEOUT_SEC)).id for _ in range(count)]


class TransportContract:
    """The behaviour every transport guarantees; needs a ``make_transports`` fixture."""

    @pytest.mark.asyncio
    async def test_direct_message_arrives_intact(self, make_transports: MakeTransports) -> None:
        a, b = await make_transports(["a", "b"], None)
        sent = Message("a", recipient="b", payload={"n": 1, "blob": b"\x00\x01", "f": 1.5})
        await a.send(sent)
        got = await b.receive(RECEIVE_TIMEOUT_SEC)
        assert got == sent
        assert got.to_bytes() == sent.to_bytes()
        assert b.stats.received == 1
        assert a.stats.sent == 1

    @pytest.mark.asyncio
    async def test_signature_survives_the_wire(self, make_transports: MakeTransports) -> None:
        alice = Identity.generate()
        a, b = await make_transports([alice.fingerprint, "b"], None)
        sent = _signed(alice, recipient="b", payload={"x": [1, 2, 3]})
        await a.send(sent)
        got = await b.receive(RECEIVE_TIMEOUT_SEC)
        assert got.signature == sent.signature
        assert got.verify(alice.public_key)

    @pytest.mark.asyncio
    async def test_order_is_kept_per_sender(self, make_transports: MakeTransports) -> None:
        a, b = await make_transports(["a", "b"], None)
        sent = [Message("a", recipient="b", payload={"i": i}) for i in range(200)]
        for message in sent:
            await a.send(message)
        assert await _drain_ids(b, len(sent)) == [m.id for m in sent]

    @pytest.mark.asyncio
    async def test_replies_flow_both_ways(self, make_transports: MakeTransports) -> None:
        a, b = await make_transports(["a", "b"], None)
        await a.send(Message("a", recipient="b", payload={"q": 1}))
        question = await b.receive(RECEIVE_TIMEOUT_SEC)
        await b.send(Message("b", recipient=question.sender, payload={"a": 2}))
        answer = await a.receive(RECEIVE_TIMEOUT_SEC)
        assert answer.payload == {"a": 2}

    @pytest.mark.asyncio
    async def test_direct_message_reaches_only_its_recipient(
        self, make_transports: MakeTransports
    ) -> None:
        a, b, c = await make_transports(["a", "b", "c"], None)
        first = Message("a", recipient="b")
        fence = Message("a", recipient="c")
        await a.send(first)
        await a.send(fence)
        assert (await b.receive(RECEIVE_TIMEOUT_SEC)).id == first.id
        assert (await c.receive(RECEIVE_TIMEOUT_SEC)).id == fence.id
        assert c.queue_size == 0

    @pytest.mark.asyncio
    async def test_topic_message_reaches_subscribers_only(
        self, make_transports: MakeTransports
    ) -> None:
        a, b, c = await make_transports(["a", "b", "c"], {"b": ["alpha"], "c": ["beta"]})
        topical = Message("a", topics=(Topic("alpha"),), payload={"t": "alpha"})
        fence = Message("a", recipient="c")
        await a.send(topical)
        await a.send(fence)
        assert (await b.receive(RECEIVE_TIMEOUT_SEC)).id == topical.id
        assert (await c.receive(RECEIVE_TIMEOUT_SEC)).id == fence.id
        assert a.queue_size == 0

    @pytest.mark.asyncio
    async def test_subscribe_later_and_unsubscribe(self, make_transports: MakeTransports) -> None:
        a, b = await make_transports(["a", "b"], None)
        await b.subscribe("gamma")
        first = Message("a", topics=(Topic("gamma"),))
        await a.send(first)
        assert (await b.receive(RECEIVE_TIMEOUT_SEC)).id == first.id
        await b.unsubscribe("gamma")
        await a.send(Message("a", topics=(Topic("gamma"),)))
        fence = Message("a", recipient="b")
        await a.send(fence)
        assert (await b.receive(RECEIVE_TIMEOUT_SEC)).id == fence.id

    @pytest.mark.asyncio
    async def test_broadcast_reaches_everyone_but_the_sender(
        self, make_transports: MakeTransports
    ) -> None:
        a, b, c = await make_transports(["a", "b", "c"], None)
        shout = Message("a", payload={"all": True})
        await a.send(shout)
        assert (await b.receive(RECEIVE_TIMEOUT_SEC)).id == shout.id
        assert (await c.receive(RECEIVE_TIMEOUT_SEC)).id == shout.id
        fence = Message("b", recipient="a")
        await b.send(fence)
        assert (await a.receive(RECEIVE_TIMEOUT_SEC)).id == fence.id

    @pytest.mark.asyncio
    async def test_receive_times_out_with_builtin_timeout(
        self, make_transports: MakeTransports
    ) -> None:
        (a,) = await make_transports(["a"], None)
        import pytest

        with pytest.raises(TimeoutError):
            await a.receive(timeout=0.05)
        with pytest.raises(TimeoutError):
            await a.receive(timeout=0)

    @pytest.mark.asyncio
    async def test_receive_verified_drops_and_counts_bad_messages(
        self, make_transports: MakeTransports
    ) -> None:
        alice, mallory, stranger = Identity.generate(), Identity.generate(), Identity.generate()
        a, b = await make_transports([alice.fingerprint, "b"], None)
        registry = IdentityRegistry()
        registry.register(alice)
        registry.register(mallory)
        good = _signed(alice, recipient="b", payload={"ok": 1})
        forged = Message(alice.fingerprint, recipient="b", payload={"evil": 1}).sign(mallory)
        forged = Message.from_dict({**forged.to_dict(), "sender": alice.fingerprint})
        unsigned = Message(alice.fingerprint, recipient="b")
        unknown = _signed(stranger, recipient="b")
        stale = Message(alice.fingerprint, recipient="b", timestamp=1.0).sign(alice)
        last = _signed(alice, recipient="b", payload={"ok": 2})
        for message in (forged, unsigned, unknown, good, good, stale, last):
            await a.send(message)
        assert (await b.receive_verified(registry, RECEIVE_TIMEOUT_SEC)).id == good.id
        assert (await b.receive_verified(registry, RECEIVE_TIMEOUT_SEC)).id == last.id
        assert b.stats.dropped_unverified == 2
        assert b.stats.dropped_unknown_sender == 1
        assert b.stats.dropped_replayed == 2

    @pytest.mark.asyncio
    async def test_receive_verified_times_out(self, make_transports: MakeTransports) -> None:
        (a,) = await make_transports(["a"], None)
        import pytest

        with pytest.raises(TimeoutError):
            await a.receive_verified(IdentityRegistry(), timeout=0.05)

    @pytest.mark.asyncio
    async def test_lifecycle_errors_and_idempotent_stop(
        self, make_transports: MakeTransports
    ) -> None:
        a, b = await make_transports(["a", "b"], None)
        import pytest

        waiting = asyncio.create_task(b.receive(timeout=RECEIVE_TIMEOUT_SEC))
        await b.stop()
        await b.stop()
        with pytest.raises(ClosedError):
            await waiting
        with pytest.raises(ClosedError):
            await b.send(Message("b", recipient="a"))
        with pytest.raises(ClosedError):
            await b.receive(timeout=0.01)
        assert b.state.value == "stopped"
        await a.start()  # idempotent while running
        assert a.is_running

    @pytest.mark.asyncio
    async def test_restart_after_stop(self, make_transports: MakeTransports) -> None:
        a, b = await make_transports(["a", "b"], {"a": ["news"]})
        await a.stop()
        await a.start()
        assert a.is_running and a.queue_size == 0
        assert a.subscriptions == ("news",)
        direct = Message("b", recipient="a")
        topical = Message("b", topics=(Topic("news"),))
        for message in (direct, topical):
            for attempt in range(3):  # a pooled connection to the old endpoint may be dead
                try:
                    await b.send(message)
                    break
                except TransportError:
                    if attempt == 2:
                        raise
        assert [(await a.receive(RECEIVE_TIMEOUT_SEC)).id for _ in range(2)] == [
            direct.id,
            topical.id,
        ]
