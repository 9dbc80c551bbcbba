"""Fixtures of the projection tests: an event log per backend (memory, JetStream)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from events import EventLog, MemoryEventLog

LogFactory = Callable[[str], Awaitable[EventLog]]

BACKENDS = ["memory", pytest.param("jetstream", marks=pytest.mark.nats)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-process log, else the URL of the session's nats-server."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("nats_url")
    return url


async def open_log(url: str | None, namespace: str) -> EventLog:
    """Open (and start) an event log of the backend ``url`` selects."""
    if url is None:
        log = MemoryEventLog(namespace)
        await log.start()
        return log
    from events import JetStreamEventLog

    return await JetStreamEventLog.connect(url, namespace=namespace)


@pytest.fixture
def log_factory(backend: str | None) -> LogFactory:
    """Open further logs of the test's backend (the caller closes them)."""

    async def factory(namespace: str) -> EventLog:
        return await open_log(backend, namespace)

    return factory


@pytest.fixture
async def event_log(backend: str | None, namespace: str) -> AsyncIterator[EventLog]:
    log = await open_log(backend, namespace)
    try:
        yield log
    finally:
        await log.close()
