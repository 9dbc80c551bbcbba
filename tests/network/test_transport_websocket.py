"""WebSocketTransport: bad frames, oversized messages, client/server routing, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from converge.core.message import Message
from converge.errors import ConfigError, FrameTooLargeError, TransportError
from converge.network.transport.websocket import AGENT_HEADER, WebSocketTransport

TIMEOUT = 5.0


@pytest_asyncio.fixture
async def server() -> AsyncIterator[WebSocketTransport]:
    transport = WebSocketTransport("srv", port=0, max_message_bytes=4096)
    async with transport:
        yield transport


@pytest.mark.asyncio
async def test_garbage_and_text_frames_are_counted(server: WebSocketTransport) -> None:
    good = Message("cli", recipient="srv")
    async with connect(server.url, proxy=None) as ws:
        await ws.send("hello, I am text")
        await ws.send(b"\xc1\xc1")
        await ws.send(good.to_bytes())
        assert (await server.receive(TIMEOUT)).id == good.id
    assert server.stats.decode_errors == 2


@pytest.mark.asyncio
async def test_oversized_message_closes_that_connection(server: WebSocketTransport) -> None:
    async with connect(server.url, proxy=None, max_size=None) as ws:
        await ws.send(b"x" * 10_000)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1009
    async with connect(server.url, proxy=None) as ws:
        good = Message("cli", recipient="srv")
        await ws.send(good.to_bytes())
        assert (await server.receive(TIMEOUT)).id == good.id
    assert server.stats.oversized_frames == 1


@pytest.mark.asyncio
async def test_outbound_too_large_raises(server: WebSocketTransport) -> None:
    async with WebSocketTransport("cli", server.url, max_message_bytes=1024) as client:
        with pytest.raises(FrameTooLargeError):
            await client.send(Message("cli", recipient="srv", payload={"b": b"x" * 2048}))


@pytest.mark.asyncio
async def test_client_with_uri_and_server_replies_over_its_connection(
    server: WebSocketTransport,
) -> None:
    # Seed style: the client only knows the server's URI; the server learns the
    # client's id from the handshake header and answers over that connection.
    async with WebSocketTransport("cli", server.url) as client:
        await client.send(Message("cli", recipient="srv", payload={"q": 1}))
        question = await server.receive(TIMEOUT)
        await server.send(Message("srv", recipient=question.sender, payload={"a": 1}))
        assert (await client.receive(TIMEOUT)).payload == {"a": 1}
        with pytest.raises(TransportError, match="no route"):
            await server.send(Message("srv", recipient="stranger"))


@pytest.mark.asyncio
async def test_peer_that_stops_reading_times_out() -> None:
    # A raw client completes the handshake as agent "stuck", then never reads.
    sender = WebSocketTransport("srv2", port=0, send_timeout_sec=0.3, max_message_bytes=2 << 20)
    async with WebSocketTransport("srv-peer", port=0) as other, sender:
        raw = await connect(sender.url, proxy=None, additional_headers={AGENT_HEADER: "stuck"})
        try:
            raw.transport.pause_reading()
            blob = b"x" * (1 << 20)
            with pytest.raises(TransportError, match="did not read"):
                for _ in range(64):  # far more than the socket buffers hold
                    await sender.send(Message("srv2", recipient="stuck", payload={"b": blob}))
            # The sender still reaches other peers.
            sender.add_peer("srv-peer", other.url)
            good = Message("srv2", recipient="srv-peer")
            await sender.send(good)
            assert (await other.receive(TIMEOUT)).id == good.id
        finally:
            raw.transport.abort()


@pytest.mark.asyncio
async def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="uri to dial"):
        WebSocketTransport("a")
    with pytest.raises(ConfigError, match="ws://"):
        WebSocketTransport("a", "http://example.invalid")
    with pytest.raises(TransportError, match="cannot open WebSocket"):
        async with WebSocketTransport("a", "ws://127.0.0.1:9", open_timeout_sec=1.0):
            pass


@pytest.mark.asyncio
async def test_client_redials_after_the_server_restarts() -> None:
    first = WebSocketTransport("srv", port=0)
    await first.start()
    url = first.url
    async with WebSocketTransport("cli", url) as client:
        await client.send(Message("cli", recipient="srv", payload={"n": 1}))
        assert (await first.receive(TIMEOUT)).payload == {"n": 1}
        await first.stop()
        async with WebSocketTransport("srv", port=first.port) as second:
            message = Message("cli", recipient="srv", payload={"n": 2})
            for attempt in range(3):
                try:
                    await client.send(message)
                    break
                except TransportError:
                    if attempt == 2:
                        raise
            assert (await second.receive(TIMEOUT)).payload == {"n": 2}
