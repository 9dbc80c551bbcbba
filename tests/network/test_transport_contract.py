"""The transport contract, run against every backend (NATS on a real server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from converge.network.transport.testing import (
    MakeTransports,
    TransportContract,
    local_transports,
    nats_transports,
    tcp_transports,
    websocket_transports,
)

BACKENDS = [
    "local",
    "tcp",
    "websocket",
    pytest.param("nats", marks=pytest.mark.nats),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """The backend's name, plus the NATS URL and namespace for the NATS backend."""
    if request.param != "nats":
        return (request.param, "", "")
    # Resolved here, outside the test's event loop (the server fixture runs its own).
    return ("nats", request.getfixturevalue("nats_url"), request.getfixturevalue("namespace"))


@pytest_asyncio.fixture
async def make_transports(backend: tuple[str, str, str]) -> AsyncIterator[MakeTransports]:
    name, nats_url, namespace = backend
    if name == "local":
        factory = local_transports()
    elif name == "tcp":
        factory = tcp_transports()
    elif name == "websocket":
        factory = websocket_transports()
    else:
        factory = nats_transports(nats_url, namespace)
    async with factory as make:
        yield make


class TestTransportContract(TransportContract):
    """Every test of the contract, once per backend."""
