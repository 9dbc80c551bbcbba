"""Networking: transports, discovery, the identity registry and the AgentNetwork facade.

Transports live in :mod:`converge.network.transport` (``local``, ``tcp``, ``nats``,
``websocket``); the optional ones are imported from their modules.
"""

from __future__ import annotations

from converge.network.discovery import AgentDescriptor, DiscoveryQuery, DiscoveryService
from converge.network.identity_registry import IdentityRegistry
from converge.network.network import AgentNetwork, build_descriptor
from converge.network.replay import ReplayGuard, ReplayVerdict
from converge.network.transport import (
    LocalTransport,
    LocalTransportRegistry,
    Transport,
    TransportState,
    TransportStats,
)

__all__ = [
    "AgentDescriptor",
    "AgentNetwork",
    "DiscoveryQuery",
    "DiscoveryService",
    "IdentityRegistry",
    "LocalTransport",
    "LocalTransportRegistry",
    "ReplayGuard",
    "ReplayVerdict",
    "Transport",
    "TransportState",
    "TransportStats",
    "build_descriptor",
]
