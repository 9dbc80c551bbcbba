"""The EventLog contract, run on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from converge.extensions.storage.file import FileStore
from converge.extensions.storage.memory import MemoryStore
from converge.extensions.storage.nats_kv import NatsKVStore
from events.jetstream import JetStreamEventLog, rawroute
from events.log import EventLog
from events.memory import MemoryEventLog
from events.store_log import StoreEventLog
from events.testing import EventLogContract


@pytest.fixture(
    params=[
        "memory",
        pytest.param("jetstream", marks=pytest.mark.nats),
        # reads on nats-py's stock ordered consumer, as after a nats-py upgrade the fast
        # read path was not checked against (see events/jetstream/rawroute.py)
        pytest.param("jetstream-stock", marks=pytest.mark.nats),
        "store-memory",
        "store-file",
        pytest.param("store-natskv", marks=pytest.mark.nats),
    ]
)
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """The backend name with its server URL and namespace (resolved outside the loop)."""
    if request.param == "store-file":
        return "store-file", str(request.getfixturevalue("tmp_path")), "converge"
    if request.param == "jetstream-stock":
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr(rawroute, "FAST_PATH_NATS_PY", ("0.0.0-never",))
    if request.param in ("jetstream", "jetstream-stock", "store-natskv"):
        return (
            request.param,
            request.getfixturevalue("nats_url"),
            request.getfixturevalue("namespace"),
        )
    return request.param, "", "converge"


@pytest_asyncio.fixture
async def event_log(backend: tuple[str, str, str]) -> AsyncIterator[EventLog]:
    name, url, namespace = backend
    log: EventLog
    kv: NatsKVStore | None = None
    if name == "memory":
        log = MemoryEventLog()
    elif name == "store-memory":
        log = StoreEventLog(MemoryStore())
    elif name == "store-file":
        log = StoreEventLog(FileStore(url, fsync=False))
    elif name == "store-natskv":
        kv = await NatsKVStore.connect(url, bucket=namespace, storage="memory")
        log = StoreEventLog(kv, namespace)
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
        if kv is not None:
            await kv.stop()


class TestEventLogContract(EventLogContract):
    pass
