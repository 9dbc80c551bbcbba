"""Start point-to-point transports (TCP, WebSocket) that all know each other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from converge.network.transport.tcp import TcpTransport
    from converge.network.transport.websocket import WebSocketTransport

__all__ = ["start_mesh"]


async def start_mesh(transports: Sequence[TcpTransport | WebSocketTransport]) -> None:
    """Start every transport, then make each one a peer of every other.

    TCP peers are addressed by their listening ``(host, port)``, WebSocket peers by
    their ``ws://`` URL, both known only once started. On any error every transport
    is stopped and the error re-raised.
    """
    from converge.network.transport.tcp import TcpTransport

    try:
        for transport in transports:
            await transport.start()
        for transport in transports:
            for other in transports:
                if other is transport:
                    continue
                assert other.agent_id is not None
                if isinstance(transport, TcpTransport):
                    assert isinstance(other, TcpTransport)
                    transport.add_peer(other.agent_id, other.address)
                else:
                    assert not isinstance(other, TcpTransport)
                    transport.add_peer(other.agent_id, other.url)
    except BaseException:
        for transport in transports:
            await transport.stop()
        raise
