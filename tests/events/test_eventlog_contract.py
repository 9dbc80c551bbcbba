"""The EventLog contract, run on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from events.jetstream import JetStreamEventLog
from events.log import EventLog
from events.memory import MemoryEventLog
from events.testing import EventLogContract


@pytest.fixture(params=["memory", pytest.param("jetstream", marks=pytest.mark.nats)])
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """The backend name with its server URL and namespace (resolved outside the loop)."""
    if request.param == "jetstream":
        return (
            "jetstream",
            request.getfixturevalue("nats_url"),
            request.getfixturevalue("namespace"),
        )
    return "memory", "", "converge"


@pytest.fixture
async def event_log(backend: tuple[str, str, str]) -> AsyncIterator[EventLog]:
    name, url, namespace = backend
    log: EventLog
    if name == "memory":
        log = MemoryEventLog()
    else:
        log = await JetStreamEventLog.connect(url, namespace=namespace, storage="memory")
    await log.start()
    try:
        yield log
    finally:
        if isinstance(log, JetStreamEventLog):
            await log.start()  # a test may have closed it
            await log.delete_streams()  # keep the shared server small
        await log.close()


class TestEventLogContract(EventLogContract):
    pass
