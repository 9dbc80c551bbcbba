"""Shared fixtures: a real nats-server per test session, a fresh namespace per test.

The server is started once per pytest process (each xdist worker has its own) on a
free loopback port with a temporary JetStream directory. When the binary is missing
the NATS tests are skipped on a developer machine, but fail when ``CI`` or
``CONVERGE_REQUIRE_NATS`` is set: in CI a missing server is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from converge.errors import ConfigError
from events.server import EmbeddedNatsServer, find_nats_server


def _nats_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("CONVERGE_REQUIRE_NATS"))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    """A running nats-server with JetStream, shared by the tests of this process."""
    try:
        find_nats_server()
    except ConfigError as exc:
        if _nats_required():
            pytest.fail(f"nats-server is required here: {exc}", pytrace=False)
        pytest.skip(str(exc))
    server = EmbeddedNatsServer(data_dir=tmp_path_factory.mktemp("nats"))
    asyncio.run(server.start())
    try:
        yield server
    finally:
        asyncio.run(server.stop())


@pytest.fixture
def nats_url(nats_server: EmbeddedNatsServer) -> str:
    return nats_server.url


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so streams never collide."""
    return f"t{uuid.uuid4().hex[:12]}"
