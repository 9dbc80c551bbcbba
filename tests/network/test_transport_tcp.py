"""TcpTransport: bad input on the wire, slow peers, routing and lifecycle errors."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import (
    ConfigError,
    FrameTooLargeError,
    NotStartedError,
    TransportError,
)
from converge.network.transport.tcp import HEADER, TcpTransport, encode_frame

TIMEOUT = 5.0


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[TcpTransport]:
    transport = TcpTransport("127.0.0.1", 0, "rx", max_frame_bytes=4096, frame_timeout_sec=1.0)
    async with transport:
        yield transport


async def _raw(transport: TcpTransport) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", transport.port)


def _frame(message: Message) -> bytes:
    return encode_frame(message.to_bytes())


@pytest.mark.asyncio
async def test_ephemeral_port_is_exposed(receiver: TcpTransport) -> None:
    assert receiver.port > 0
    assert receiver.address == ("127.0.0.1", receiver.port)


@pytest.mark.asyncio
async def test_garbage_frames_are_counted_and_skipped(receiver: TcpTransport) -> None:
    _, writer = await _raw(receiver)
    good = Message("tx", recipient="rx", payload={"ok": True})
    writer.write(HEADER.pack(5) + b"\xc1\xc1\xc1\xc1\xc1")  # msgpack "never used" bytes
    writer.write(HEADER.pack(3) + b"abc")  # valid msgpack ints, not a message map
    writer.write(HEADER.pack(0))  # empty frame
    writer.write(encode_frame(b"\x81\xa3foo\xa3bar"))  # a map without the message fields
    writer.write(_frame(good))
    await writer.drain()
    got = await receiver.receive(TIMEOUT)
    assert got.id == good.id
    assert receiver.stats.decode_errors == 4
    writer.close()


@pytest.mark.asyncio
async def test_oversized_inbound_frame_closes_only_that_connection(
    receiver: TcpTransport,
) -> None:
    reader, writer = await _raw(receiver)
    writer.write(HEADER.pack(receiver.max_frame_bytes + 1) + b"x" * 16)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the receiver
    assert receiver.stats.oversized_frames == 1
    writer.close()
    _, writer2 = await _raw(receiver)
    good = Message("tx", recipient="rx")
    writer2.write(_frame(good))
    await writer2.drain()
    assert (await receiver.receive(TIMEOUT)).id == good.id
    writer2.close()


@pytest.mark.asyncio
async def test_outbound_frame_too_large_raises(receiver: TcpTransport) -> None:
    async with TcpTransport("127.0.0.1", 0, "tx", max_frame_bytes=1024) as sender:
        sender.add_peer("rx", receiver.address)
        with pytest.raises(FrameTooLargeError, match="limit of 1024 bytes"):
            await sender.send(Message("tx", recipient="rx", payload={"blob": b"x" * 2000}))
        assert sender.stats.sent == 0
    with pytest.raises(FrameTooLargeError, match="max_frame_bytes=8"):
        encode_frame(b"123456789", 8)


@pytest.mark.asyncio
async def test_half_closed_connection_does_not_stall_the_receiver(
    receiver: TcpTransport,
) -> None:
    # One peer sends half a frame and shuts its write side; another sends a header and
    # then nothing at all. Neither stops a third, well-behaved peer.
    _, half = await _raw(receiver)
    payload = _frame(Message("tx", recipient="rx"))
    half.write(payload[: len(payload) // 2])
    await half.drain()
    half.write_eof()
    _, silent = await _raw(receiver)
    silent.write(HEADER.pack(100))
    await silent.drain()
    good = Message("tx", recipient="rx", payload={"n": 1})
    async with TcpTransport("127.0.0.1", 0, "tx") as sender:
        sender.add_peer("rx", receiver.address)
        await sender.send(good)
        assert (await receiver.receive(TIMEOUT)).id == good.id
    half.close()
    silent.close()


@pytest.mark.asyncio
async def test_peer_that_stops_reading_fails_the_send_not_the_receiver(
    receiver: TcpTransport,
) -> None:
    # A listener that accepts and never reads: writes back up until the drain times out.
    accepted: list[socket.socket] = []
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    sender = TcpTransport("127.0.0.1", 0, "tx", write_timeout_sec=0.5, max_frame_bytes=2 << 20)
    async with sender:
        sender.add_peer("stuck", stalled.getsockname())
        sender.add_peer("rx", receiver.address)
        accept = asyncio.ensure_future(loop.sock_accept(stalled))
        blob = b"x" * (1 << 20)
        with pytest.raises(TransportError, match="did not read"):
            for _ in range(64):  # far more than the socket buffers hold
                await sender.send(Message("tx", recipient="stuck", payload={"b": blob}))
        accepted.append((await accept)[0])
        assert sender.stats.send_errors >= 1
        # The sender still works for other peers, and receives too.
        good = Message("tx", recipient="rx")
        await sender.send(good)
        assert (await receiver.receive(TIMEOUT)).id == good.id
        reply = Message("rx", recipient="tx")
        receiver.add_peer("tx", sender.address)
        await receiver.send(reply)
        assert (await sender.receive(TIMEOUT)).id == reply.id
    for sock in accepted:
        sock.close()
    stalled.close()


@pytest.mark.asyncio
async def test_reconnects_after_the_peer_restarts() -> None:
    first = TcpTransport("127.0.0.1", 0, "rx")
    await first.start()
    port = first.port
    async with TcpTransport("127.0.0.1", 0, "tx") as sender:
        sender.add_peer("rx", ("127.0.0.1", port))
        await sender.send(Message("tx", recipient="rx", payload={"n": 1}))
        assert (await first.receive(TIMEOUT)).payload == {"n": 1}
        await first.stop()
        second = TcpTransport("127.0.0.1", port, "rx")
        async with second:
            # The pooled connection is dead; the next sends reconnect.
            message = Message("tx", recipient="rx", payload={"n": 2})
            for _ in range(3):
                try:
                    await sender.send(message)
                    break
                except TransportError:
                    continue
            got = await second.receive(TIMEOUT)
            assert got.payload == {"n": 2}


@pytest.mark.asyncio
async def test_route_errors_and_topic_routes(receiver: TcpTransport) -> None:
    async with TcpTransport("127.0.0.1", 0, "tx") as sender:
        with pytest.raises(TransportError, match="add_peer"):
            await sender.send(Message("tx", recipient="nobody"))
        # Seed-style addressing by a transport.tcp topic.
        direct = Message(
            "tx",
            topics=(Topic("transport.tcp", {"host": "127.0.0.1", "port": receiver.port}),),
        )
        await receiver.subscribe("transport.tcp")
        await sender.send(direct)
        assert (await receiver.receive(TIMEOUT)).id == direct.id
        # An explicit topic route.
        sender.add_peer("rx", receiver.address)
        sender.add_route("news", "rx")
        await receiver.subscribe("news")
        news = Message("tx", topics=(Topic("news"),))
        await sender.send(news)
        assert (await receiver.receive(TIMEOUT)).id == news.id


@pytest.mark.asyncio
async def test_lifecycle_and_config_errors() -> None:
    transport = TcpTransport("127.0.0.1", 0, "tx")
    with pytest.raises(NotStartedError):
        await transport.receive(timeout=0)
    with pytest.raises(TransportError):  # send starts it, then finds no route to rx
        await transport.send(Message("tx", recipient="rx"))
    assert transport.is_running
    await transport.stop()
    with pytest.raises(ConfigError, match="port"):
        TcpTransport("127.0.0.1", 70000)
    with pytest.raises(ConfigError, match="host, port"):
        transport.add_peer("rx", ("127.0.0.1", 0))
    with pytest.raises(ConfigError, match="write_timeout_sec"):
        TcpTransport("127.0.0.1", 0, write_timeout_sec=0)
    async with TcpTransport("127.0.0.1", 0, "a") as busy:
        with pytest.raises(TransportError, match="cannot listen"):
            await TcpTransport("127.0.0.1", busy.port, "b").start()


@pytest.mark.asyncio
async def test_stop_closes_connections_and_tasks(receiver: TcpTransport) -> None:
    sender = TcpTransport("127.0.0.1", 0, "tx")
    await sender.start()
    sender.add_peer("rx", receiver.address)
    await sender.send(Message("tx", recipient="rx"))
    await receiver.receive(TIMEOUT)
    before = {t for t in asyncio.all_tasks() if not t.done()}
    await sender.stop()
    after = {t for t in asyncio.all_tasks() if not t.done()}
    assert not any("tcp-watch" in t.get_name() for t in after)
    assert len(after) <= len(before)
    assert not sender._pool
    assert struct.calcsize("!I") == HEADER.size
