"""Broker connection settings and ``connect_nats``: kept importable here.

The code lives in :mod:`events.jetstream.client`, beside the rest of the JetStream
backend, so nats-py is imported only by the backend and the NATS transport.
"""

from __future__ import annotations

from events.jetstream.client import (
    SCHEMES,
    BrokerConfig,
    NatsClient,
    PlainTextRefusedError,
    TlsConfig,
    check_url,
    connect_nats,
    probe,
    redact,
)

__all__ = [
    "SCHEMES",
    "BrokerConfig",
    "NatsClient",
    "PlainTextRefusedError",
    "TlsConfig",
    "check_url",
    "connect_nats",
    "probe",
    "redact",
]
