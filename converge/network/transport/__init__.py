"""Transports: how messages move between agents (local, TCP, NATS, WebSocket).

``NatsTransport`` and ``WebSocketTransport`` are imported from their modules
(``converge.network.transport.nats``, ``...websocket``; the latter needs the
``websocket`` extra).
"""

from __future__ import annotations

from converge.network.transport.base import Transport, TransportState, TransportStats
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.network.transport.tcp import TcpTransport

__all__ = [
    "LocalTransport",
    "LocalTransportRegistry",
    "TcpTransport",
    "Transport",
    "TransportState",
    "TransportStats",
]
